"""Session fixtures that start or reach the real services the tests need (helpers in tests/helpers).

RabbitMQ (with its management plugin) and PostgreSQL must already run: `.ci/run` and
`make test` start them. The Kubernetes control plane is built from source by infra/local-cluster/build.sh
(minutes the first time, instant after) and started here. A missing service fails the run:
nothing here skips.
"""

import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.helpers.broker import Broker
from tests.helpers.kube import KubeCluster

# Importable once tests.helpers has put infra/local-cluster on the path.
from localcluster.agent import start_agent, stop_agent, wait_node
from localcluster.control_plane import ControlPlane, bin_dir

LEDGER_ADMIN_URL = os.environ.get("LEDGER_ADMIN_URL", "postgresql://kubejob:kubejob@localhost:5432/kubejob")


@pytest.fixture(scope="session", autouse=True)
def ledger_database() -> Iterator[str]:
    """A database of its own for this run, in the local PostgreSQL (make postgres), dropped after.

    Set as DATABASE_URL in the environment, so Settings() in this process and every service a
    test starts finds it.
    """
    name = f"kubejob_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(LEDGER_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {LEDGER_ADMIN_URL} (make postgres): {exc}", pytrace=False)
    url = LEDGER_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    yield url
    if saved is None:
        del os.environ["DATABASE_URL"]
    else:
        os.environ["DATABASE_URL"] = saved
    with psycopg.connect(LEDGER_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> Broker:
    broker = Broker()
    try:
        broker.check()
    except Exception as exc:
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
