"""A local Kubernetes for the benchmarks that create Jobs (see infra/local-cluster)."""

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, config

import tests.helpers  # noqa: F401 - puts infra/local-cluster, where the launcher is, on the path
from tests.helpers.kube import KubeCluster

from localcluster import netns
from localcluster.control_plane import ControlPlane, bin_dir
from localcluster.node import Node
from localcluster.stack import build_images


@contextlib.contextmanager
def control_plane() -> Iterator[tuple[Path, client.ApiClient]]:
    """A fresh control plane alone on loopback for the block; yields its kubeconfig and an admin client."""
    bin_dir()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        plane = ControlPlane(Path(state), tied=True)
        try:
            plane.up()
            yield plane.kubeconfig, config.new_client_from_config(str(plane.kubeconfig))
        finally:
            plane.down()


@contextlib.contextmanager
def node() -> Iterator[KubeCluster]:
    """A fresh one-node cluster in a network namespace of its own for the block, as the tests' kube_node."""
    bins = bin_dir()
    build_images()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        network = netns.for_tests()
        plane = ControlPlane(Path(state), tied=True, network=network)
        began = time.monotonic()
        try:
            plane.up()
            Node(plane).up()
            yield KubeCluster(plane, bins, time.monotonic() - began)
        finally:
            Node(plane).down()
            plane.down()
            network.delete()
