"""The scaler's reading of the backlog against the tests' broker and ledger, and an upload paused or cancelled in the
ledger as the producer records it."""

import os

import pika
import psycopg

from scaler.backlog import Backlog
from scaler.queue_depth import ManagementClient
from scaler.queue_live import LiveQueues
from scaler.uploads import OpenUploads
from tests.helpers.broker import Broker


def backlog(broker: Broker, queue: str, *, port: int | None = None, management_url: str | None = None,
            database_url: str | None = None, timeout_s: float = 2.0) -> Backlog:
    """A Backlog as `python -m scaler` builds it, of `queue` on `broker` and the ledger DATABASE_URL names."""
    management = ManagementClient(base_url=management_url or broker.management_url, user=broker.user,
                                  password=broker.password, vhost="/", timeout_s=timeout_s)
    uploads = OpenUploads(database_url or os.environ["DATABASE_URL"], queue=queue, timeout_s=timeout_s)
    return Backlog(queue=queue, uploads=uploads,
                   live=LiveQueues(parameters=parameters(broker, port=port), timeout_s=timeout_s),
                   management=management)


def parameters(broker: Broker, *, port: int | None = None) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(host=broker.host, port=port or broker.port, connection_attempts=1,
                                     credentials=pika.PlainCredentials(broker.user, broker.password))


def pause(upload_id: str) -> None:
    """Mark the upload paused in the ledger DATABASE_URL names."""
    _set(upload_id, "paused_at")


def cancel(upload_id: str) -> None:
    """Mark the upload cancelled in the ledger DATABASE_URL names (its queue is deleted later, by the producer)."""
    _set(upload_id, "cancelled_at")


def _set(upload_id: str, column: str) -> None:
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn:
        updated = conn.execute(f"UPDATE uploads SET {column} = now() WHERE id = %s", (upload_id,)).rowcount
    assert updated == 1, f"no upload {upload_id} in the ledger"
