"""Session fixtures that start or reach the real services the tests need (helpers in tests/helpers).

None is used by tests/unit, which runs with no service reachable; tests/integration and
tests/e2e use them, and their conftest.py gives every test there the ledger's database. They
are defined here, once, so that a session fixture both layers use (the one-node cluster) starts
once per run.

RabbitMQ (with its management plugin) and PostgreSQL must already run: `.ci/run` and
`make test` start them. The Kubernetes control plane is built from source by infra/local-cluster/build.sh
(minutes the first time, instant after) and started here; so is a RabbitMQ 4.0 of the session's own,
from the image infra/local-cluster/images.sh builds (Docker). A missing service fails the run:
nothing here skips.
"""

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.broker import Broker
from tests.helpers.kube import KubeCluster
from tests.helpers.ledger import as_database_url, fresh_database
from tests.helpers.rabbitmq_server import DockerRabbitmq

# Importable once tests.helpers has put infra/local-cluster on the path.
from localcluster import netns
from localcluster.control_plane import ControlPlane, bin_dir
from localcluster.node import Node
from localcluster.stack import build_images


@pytest.fixture(scope="session")
def ledger_database() -> Iterator[str]:
    """A database of its own for this run, in the local PostgreSQL (make postgres), dropped after.

    Set as DATABASE_URL in the environment, so Settings() in this process and every service a
    test starts finds it. Uploads that no worker drains stay open in it all the run long, so the
    bound on a tenant's open uploads is lifted for the run; tests of the bound set it themselves.
    """
    with fresh_database() as url, as_database_url(url), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAX_OPEN_UPLOADS_PER_TENANT", "10000")
        yield url


@pytest.fixture(scope="session")
def local_broker() -> Broker:
    """The local RabbitMQ (make rabbitmq; Debian 12's 3.10 here), as RABBITMQ_HOST and friends name it."""
    broker = Broker()
    try:
        broker.check()
    except Exception as exc:
        pytest.fail(f"RabbitMQ with its management plugin is not reachable: {exc!r}", pytrace=False)
    return broker


@pytest.fixture(scope="session")
def broker(local_broker: Broker) -> Broker:
    """The broker a test uses; a module may override it with `each_broker` to run on every one."""
    return local_broker


@pytest.fixture(scope="session")
def rabbitmq_4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRabbitmq]:
    """RabbitMQ 4.0 from the image infra/k8s runs, of this session's own (its alarms touch no other test)."""
    try:
        server = DockerRabbitmq.start(tmp_path_factory.mktemp("rabbitmq4"))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, TimeoutError) as exc:
        stderr = getattr(exc, "stderr", None) or ""
        pytest.fail(f"RabbitMQ 4.0 did not start: {exc} {stderr}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "4.0"], ids=["rabbitmq-local", "rabbitmq-4.0"])
def each_broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Broker:
    """The local RabbitMQ, then RabbitMQ 4.0; the environment points the services a test starts at it."""
    broker: Broker = request.getfixturevalue("local_broker" if request.param == "local" else "rabbitmq_4")
    for name, value in broker.environment().items():
        monkeypatch.setenv(name, value)
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
        began = time.monotonic()
        try:
            control_plane.up()
            node.up()
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"the one-node cluster did not start: {exc}", pytrace=False)
        yield KubeCluster(control_plane, bins, time.monotonic() - began)
    finally:
        node.down()
        control_plane.down()
        network.delete()


@pytest.fixture
def node_namespace(kube_node: KubeCluster) -> Iterator[str]:
    """A fresh namespace on the one-node cluster, deleted with everything in it after the test."""
    name = kube_node.namespace()
    yield name
    kube_node.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace, deleted with everything in it after the test."""
    name = kube_cluster.namespace()
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")
