"""Session fixtures that talk to the real services the tests need.

RabbitMQ (with its management plugin) must already run: `.ci/run` and `make services`
start it. A missing broker fails the run instead of skipping tests.
"""

import os
import uuid
from collections.abc import Iterator

import httpx
import pika
import psycopg
import pika.exceptions
import pytest

from kubejob import message

pytest_plugins = ["tests.fixtures_kube"]


AMQP_HOST = os.environ.get("RABBITMQ_HOST", "localhost")
AMQP_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))
MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://localhost:15672")
CREDENTIALS = ("guest", "guest")


class Broker:
    """A handle on the real broker: AMQP for messages, the management API for counts."""

    def __init__(self) -> None:
        self.host, self.port, self.management_url = AMQP_HOST, AMQP_PORT, MANAGEMENT_URL
        self.user, self.password = CREDENTIALS

    def connection(self) -> pika.BlockingConnection:
        params = pika.ConnectionParameters(
            host=self.host, port=self.port, credentials=pika.PlainCredentials(*CREDENTIALS)
        )
        return pika.BlockingConnection(params)

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` right now (passive declare, not the lagging stats)."""
        with self.connection() as conn:
            return conn.channel().queue_declare(queue, passive=True).method.message_count

    def publish_rows(self, queue: str, rows: list[dict[str, str]]) -> str:
        """Declare `queue` and its dead-letter queue as the producer does; one confirmed message per row.

        Returns the upload id the messages carry, new for each call (the ledger keys rows by it).
        """
        upload_id = uuid.uuid4().hex
        with self.connection() as conn:
            channel = conn.channel()
            channel.queue_declare(message.dead_letter_queue(queue), durable=True)
            channel.queue_declare(queue, durable=True, arguments=message.queue_arguments(queue))
            channel.confirm_delivery()
            for number, row in enumerate(rows, start=1):
                channel.basic_publish("", queue, *message.encode(row, upload_id=upload_id, row_number=number,
                                                                 line=number + 1))
        return upload_id

    def counts(self, queue: str) -> dict[str, int]:
        """The queue's counts from the management API (as fresh as its statistics interval)."""
        response = httpx.get(f"{self.management_url}/api/queues/%2F/{queue}", auth=CREDENTIALS, timeout=5)
        response.raise_for_status()
        return response.json()

    def exists(self, queue: str) -> bool:
        with self.connection() as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return False
                raise
        return True

    def drain(self, queue: str) -> list[tuple[pika.spec.BasicProperties, bytes]]:
        """Take every ready message off `queue` and return it."""
        taken = []
        with self.connection() as conn:
            channel = conn.channel()
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return taken
                taken.append((props, body))

    def delete_queue(self, queue: str) -> None:
        with self.connection() as conn:
            conn.channel().queue_delete(queue)


LEDGER_ADMIN_URL = os.environ.get("LEDGER_ADMIN_URL", "postgresql://kubejob:kubejob@localhost:5432/kubejob")


@pytest.fixture(scope="session", autouse=True)
def ledger_database() -> Iterator[str]:
    """A database of its own for this run, in the local PostgreSQL; every service started by a test uses it.

    Set in the environment, so Settings() in this process and every child process finds it.
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
        httpx.get(f"{MANAGEMENT_URL}/api/overview", auth=CREDENTIALS, timeout=5).raise_for_status()
        broker.connection().close()
    except Exception as exc:  # noqa: BLE001 - any failure here means the suite cannot run
        pytest.fail(f"RabbitMQ with its management plugin is not reachable: {exc!r}", pytrace=False)
    return broker


@pytest.fixture
def queue_name(broker: Broker):
    """A fresh queue name per test; the queue and its dead-letter queue are deleted after."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    broker.delete_queue(name)
    broker.delete_queue(f"{name}.dead")


def answers(url: str) -> bool:
    """True when `url` answers 200 now (a service's health endpoint while it starts)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
