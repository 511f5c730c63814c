"""Session fixtures that start or reach the real services the tests need (helpers in tests/helpers).

RabbitMQ (with its management plugin) must already run: `.ci/run` and `make services`
start it. The Kubernetes control plane is built from source by infra/local-cluster/build.sh
(minutes the first time, instant after) and started here. A missing service fails the run:
nothing here skips.
"""

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.broker import Broker
from tests.helpers.kube import KubeCluster

# Importable once tests.helpers has put infra/local-cluster on the path.
from localcluster.agent import start_agent, stop_agent, wait_node
from localcluster.control_plane import ControlPlane, bin_dir


@pytest.fixture(scope="session")
def broker() -> Broker:
    broker = Broker()
    try:
        broker.check()
    except Exception as exc:  # noqa: BLE001 - any failure here means the suite cannot run
        pytest.fail(f"RabbitMQ with its management plugin is not reachable: {exc!r}", pytrace=False)
    return broker


@pytest.fixture
def queue_name(broker: Broker) -> Iterator[str]:
    """A fresh queue name per test; the queue and its dead-letter queue are deleted after."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    broker.delete_queue(name)


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


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace, deleted with everything in it after the test."""
    name = kube_cluster.namespace()
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")
