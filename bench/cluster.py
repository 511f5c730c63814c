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

from localcluster.control_plane import ControlPlane, bin_dir  # noqa: E402


def shipped_settings() -> dict[str, str]:
    """The settings infra/k8s/config.yaml deploys, as environment variables."""
    return yaml.safe_load((ROOT / "infra" / "k8s" / "config.yaml").read_text())["data"]


@contextlib.contextmanager
def control_plane() -> Iterator[tuple[Path, client.ApiClient]]:
    """A fresh control plane for the block; yields its kubeconfig and an admin client."""
    bin_dir()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        plane = ControlPlane(Path(state), tied=True)
        try:
            plane.up()
            yield plane.kubeconfig, config.new_client_from_config(str(plane.kubeconfig))
        finally:
            plane.down()
