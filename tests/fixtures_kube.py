"""Session fixtures for a real local Kubernetes control plane and its node agent.

The binaries are built from source by infra/local-cluster/build.sh (minutes the first
time, instant after). A failed build or start fails the run: nothing here skips.
"""

import pathlib
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

from localcluster.agent import start_agent, stop_agent, wait_node  # noqa: E402
from localcluster.control_plane import ControlPlane, bin_dir  # noqa: E402
from localcluster.processes import free_port  # noqa: E402, F401 - for tests that need a port
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
        stop_agent(control_plane)
        control_plane.down()


@pytest.fixture(scope="session")
def node_agent(kube_cluster: KubeCluster) -> Iterator[str]:
    """The node agent process serving pods on the one Node; yields the Node's name."""
    start_agent(kube_cluster.control_plane)
    try:
        wait_node(kube_cluster.control_plane)
    except SystemExit as exc:
        pytest.fail(str(exc), pytrace=False)
    yield "local-node"
    stop_agent(kube_cluster.control_plane)
