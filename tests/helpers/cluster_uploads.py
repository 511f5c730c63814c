"""Uploads made by hand in an app deployed on the one-node cluster: recorded in its ledger, rows in their own queue.

Both are reached through `kubectl port-forward`, with the accounts of the namespace's Secrets, as the
producer would record and publish them.
"""

import base64
import contextlib
import uuid
from collections.abc import Iterator

import pika
import psycopg
from kubernetes import client

from kubejob import ledger, message
from tests.helpers import wait_for
from tests.helpers.broker import Broker, rows
from tests.helpers.kube import KubeCluster, queue_depths


def _account(kube_node: KubeCluster, namespace: str, secret: str) -> tuple[str, str]:
    data = client.CoreV1Api(kube_node.api_client()).read_namespaced_secret(secret, namespace).data
    user, password = (base64.b64decode(data[key]).decode() for key in ("username", "password"))
    return user, password


@contextlib.contextmanager
def namespace_ledger(kube_node: KubeCluster, namespace: str) -> Iterator[str]:
    """The URL of the namespace's ledger, through a port-forward, for the block."""
    user, password = _account(kube_node, namespace, "postgres-credentials")
    with kube_node.port_forward("service/postgres", 5432, namespace=namespace) as port:
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/kubejob"


def publish_upload(kube_node: KubeCluster, namespace: str, queue: str, count: int, *, paused: bool = False) -> str:
    """Record an upload of `count` rows (paused if asked) in the namespace's ledger, then publish them into its own
    queue, without confirms (fast through a port-forward; the broker takes each before the connection's close),
    counted in by the broker when paused; return its id."""
    upload_id = uuid.uuid4().hex
    with namespace_ledger(kube_node, namespace) as url:
        ledger.migrate(url)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("""INSERT INTO uploads (id, file_name, columns, queue, rows, confirmed, published_at,
                                                 paused_at)
                            VALUES (%s, 'published by a test', '{id}', %s, %s, %s, now(),
                                    CASE WHEN %s THEN now() END)""",
                         (upload_id, message.upload_queue(queue, upload_id), count, count, paused))
    user, password = _account(kube_node, namespace, "rabbitmq-credentials")
    with kube_node.port_forward("service/rabbitmq", 5672, namespace=namespace) as port:
        params = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials(user, password))
        with pika.BlockingConnection(params) as conn:
            channel = conn.channel()
            target = Broker.declare_upload(channel, queue, upload_id)
            for number, row in enumerate(rows(count), start=1):
                body, properties = message.encode(row, upload_id=upload_id, row_number=number, line=number + 1)
                channel.basic_publish("", target, body, properties)
            # Workers may take rows of an upload served as they come; a paused one's must all be there.
            if paused:
                wait_for(lambda: channel.queue_declare(target, passive=True).method.message_count == count,
                         what=f"the broker to count the {count} rows in", timeout=120, interval=0.5)
    return upload_id


def backlog(kube_node: KubeCluster, namespace: str, queue: str) -> int:
    """Messages in all the uploads' queues of `queue` in the namespace's RabbitMQ, as rabbitmqctl counts them."""
    family = message.upload_queue(queue, "")
    return sum(count for name, count in queue_depths(kube_node, namespace).items() if name.startswith(family))


def resume(kube_node: KubeCluster, namespace: str, upload_id: str) -> None:
    """Take the upload's pause back in the namespace's ledger."""
    with namespace_ledger(kube_node, namespace) as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE uploads SET paused_at = NULL WHERE id = %s", (upload_id,))
