"""Uploads published by hand for a running worker, and how long it takes to finish them (tests and benchmarks).

Rows are named `<name>-<n>`, so that a handler that notes each row (tests/helpers/handlers.py)
tells which upload's rows it handled, and when.
"""

import time
import uuid
from typing import NamedTuple

from kubejob import message
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.ledger import finished, record_upload


def named_rows(name: str, count: int) -> list[dict[str, str]]:
    return [{"id": f"{name}-{n}"} for n in range(count)]


def time_to_done(broker: Broker, queue: str, name: str, rows: int, tenant: str, *, confirm: bool = True) -> float:
    """Seconds from the moment a new upload's rows are all in its queue, each confirmed, until the ledger has every
    one done.

    Without `confirm`, from the moment its rows begin to be sent, unconfirmed, in a few milliseconds: one by one
    confirmed they may take as long to send as a worker takes to handle them. The connection then stays open until
    they are done, so that none is still on its way when it closes (unconfirmed rows are lost at times, drain.fill
    in bench/ says so).
    """
    if confirm:
        upload_id = broker.publish_rows(queue, named_rows(name, rows), tenant=tenant)
        published = time.monotonic()
        wait_for(lambda: finished(upload_id) == rows, what=f"{name} to be done", timeout=60, interval=0.005)
        return time.monotonic() - published
    upload_id = uuid.uuid4().hex
    record_upload(upload_id, queue=message.upload_queue(queue, upload_id), rows=rows, tenant=tenant)
    with broker.connection() as conn:
        began = time.monotonic()
        broker.fill_upload(conn.channel(), queue, upload_id, named_rows(name, rows))
        wait_for(lambda: finished(upload_id) == rows, what=f"{name} to be done", timeout=60, interval=0.005)
        return time.monotonic() - began


class Behind(NamedTuple):
    """A small upload's time to done alone and behind a large one of another tenant (seconds), and the large
    one's id and rows still queued when the small one was done behind it."""

    alone: float
    behind: float
    large: str
    still_queued: int


def small_behind_large(broker: Broker, queue: str, *, small: int = 100, large: int = 200_000,
                       confirm: bool = True) -> Behind:
    """With a worker serving `queue`: tenant B's `small` rows alone, then behind tenant A's `large`, published
    first, B's once the worker is draining A's (B's times as time_to_done takes them, with `confirm`). A's upload
    is left as it is, mostly queued."""
    alone = time_to_done(broker, queue, "small-alone", small, tenant="B", confirm=confirm)
    large_id = broker.publish_rows(queue, named_rows("large", large), confirm=False, tenant="A")
    wait_for(lambda: finished(large_id) >= 1000, what="the large upload to drain", timeout=120, interval=0.1)
    behind = time_to_done(broker, queue, "small-behind", small, tenant="B", confirm=confirm)
    return Behind(alone, behind, large_id, broker.depth(message.upload_queue(queue, large_id)))
