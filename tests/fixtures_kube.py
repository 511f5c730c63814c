"""Session fixtures for a real local Kubernetes: the control plane alone on loopback (like
envtest) for tests that need no node, and a one-node cluster in a network namespace.

The binaries are built from source by infra/local-cluster/build.sh (minutes the first
time, instant after). A failed build or start fails the run: nothing here skips.
"""

import contextlib
import pathlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL_CLUSTER = REPO_ROOT / "infra" / "local-cluster"
sys.path.insert(0, str(LOCAL_CLUSTER))  # the launcher is a package there, not an installed one

from localcluster import netns  # noqa: E402
from localcluster.control_plane import ControlPlane, bin_dir  # noqa: E402
from localcluster.node import NODE_NAME, Node  # noqa: E402, F401 - the one Node's name
from localcluster.processes import free_port  # noqa: E402, F401 - for tests that need a port
from localcluster.stack import build_images, rabbitmq_volume  # noqa: E402, F401 - as `make up` does
from localcluster.stack import manifests as app_manifests  # noqa: E402, F401 - infra/k8s as `make up` applies it


class KubeCluster:
    """A running control plane: its kubeconfig, clients and a kubectl bound to it."""

    def __init__(self, control_plane: ControlPlane, bins: pathlib.Path, start_seconds: float) -> None:
        self.control_plane, self.bin_dir, self.start_seconds = control_plane, bins, start_seconds
        self.kubeconfig = control_plane.kubeconfig
        self.state = control_plane.state

    def api_client(self) -> client.ApiClient:
        """A new admin API client."""
        return config.new_client_from_config(str(self.kubeconfig))

    def client_configuration(self) -> client.Configuration:
        """The admin client configuration, for code that builds its own ApiClient."""
        configuration = client.Configuration()
        config.load_kube_config(str(self.kubeconfig), client_configuration=configuration, persist_config=False)
        return configuration

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; raise with its output when `check` and it fails."""
        result = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int, *, namespace: str) -> Iterator[int]:
        """`kubectl port-forward` to `target`'s `port` for the block; yields the local port."""
        process = subprocess.Popen([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                                    "port-forward", "-n", namespace, target, f":{port}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = process.stdout.readline()  # "Forwarding from 127.0.0.1:41234 -> 8000"
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not found:
                pytest.fail(f"kubectl port-forward {target}: {line}{process.stdout.read(2000)}", pytrace=False)
            yield int(found.group(1))
        finally:
            process.terminate()
            process.wait(timeout=10)

    def namespace(self) -> str:
        """Create a fresh namespace (with its default ServiceAccount in place) and return its name."""
        name = f"test-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        # The ServiceAccount admission plugin rejects pods until the controller made `default`.
        wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                 what=f"ServiceAccount default in {name}")
        return name


def wait_for(predicate, *, what: str, timeout: float = 60.0, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail the test naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver and kube-controller-manager, started once per run in a temp state dir."""
    try:
        bins = bin_dir()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the control plane failed ({exc}); run infra/local-cluster/build.sh", pytrace=False)
    control_plane = ControlPlane(tmp_path_factory.mktemp("kube"), tied=True)
    try:
        took = control_plane.up()
    except (RuntimeError, TimeoutError) as exc:
        control_plane.down()
        pytest.fail(f"control plane did not start: {exc}", pytrace=False)
    try:
        yield KubeCluster(control_plane, bins, took)
    finally:
        control_plane.down()


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A one-node cluster in a network namespace of this session's own, as `make up` starts it:
    control plane, containerd, kubelet, kube-proxy and CoreDNS, with the images of images.sh."""
    try:
        bins = bin_dir()
        build_images()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the cluster or its images failed ({exc})", pytrace=False)
    network = netns.for_tests()
    control_plane = ControlPlane(tmp_path_factory.mktemp("node"), tied=True, network=network)
    node = Node(control_plane)
    try:
        try:
            began = time.monotonic()
            control_plane.up()
            node.up()
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"the one-node cluster did not start: {exc}", pytrace=False)
        yield KubeCluster(control_plane, bins, time.monotonic() - began)
    finally:
        node.down()
        control_plane.down()
        network.delete()
