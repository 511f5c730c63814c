"""A local control plane for the benchmarks that create Jobs (see infra/local-cluster)."""

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from kubernetes import client, config

from bench.support import ROOT

sys.path.insert(0, str(ROOT / "infra" / "local-cluster"))  # the launcher is a package there

from localcluster.agent import start_agent, stop_agent, wait_node  # noqa: E402
from localcluster.control_plane import ControlPlane, bin_dir  # noqa: E402
from localcluster.stack import manifests  # noqa: E402


def shipped_settings() -> dict[str, str]:
    """The settings infra/k8s/config.yaml deploys, as environment variables."""
    return yaml.safe_load((ROOT / "infra" / "k8s" / "config.yaml").read_text())["data"]


def app_documents(**settings: str) -> list[dict]:
    """infra/k8s as `make up` applies it, with `settings` put in the kube-job-config ConfigMap."""
    docs = list(yaml.safe_load_all(manifests()))
    shared = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kube-job-config")
    shared["data"].update(settings)
    return docs


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
