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

from localcluster import netns  # noqa: E402
from localcluster.control_plane import ControlPlane, bin_dir  # noqa: E402
from localcluster.node import Node  # noqa: E402
from localcluster.stack import build_images, manifests  # noqa: E402


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
def control_plane(*, node: bool = False) -> Iterator[tuple[Path, client.ApiClient]]:
    """A fresh control plane (with `node`, a one-node cluster in a network namespace of its own)
    for the block; yields its kubeconfig and an admin client."""
    bin_dir()
    if node:
        build_images()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        network = netns.for_tests() if node else None
        plane = ControlPlane(Path(state), tied=True, network=network)
        try:
            plane.up()
            if node:
                Node(plane).up()
            yield plane.kubeconfig, config.new_client_from_config(str(plane.kubeconfig))
        finally:
            if node:
                Node(plane).down()
            plane.down()
            if network:
                network.delete()
