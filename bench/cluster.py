"""A local control plane for the benchmarks that create Jobs (see infra/local-cluster)."""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, config

import tests.helpers  # noqa: F401 - puts infra/local-cluster, where the launcher is, on the path

from localcluster.agent import start_agent, stop_agent, wait_node
from localcluster.control_plane import ControlPlane, bin_dir


@contextlib.contextmanager
def control_plane(*, node_agent: bool = False) -> Iterator[tuple[Path, client.ApiClient]]:
    """A fresh control plane (and node agent) for the block; yields its kubeconfig and an admin client."""
    bin_dir()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        plane = ControlPlane(Path(state), tied=True)
        try:
            plane.up()
            if node_agent:
                start_agent(plane)
                wait_node(plane)
            yield plane.kubeconfig, config.new_client_from_config(str(plane.kubeconfig))
        finally:
            if node_agent:
                stop_agent(plane)
            plane.down()
