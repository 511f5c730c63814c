"""Deletes the queues of uploads that no longer need one: finished, or cancelled, for longer than a grace period,
or about to be forgotten (older than LEDGER_RETENTION_DAYS), whatever their state.

Each upload's rows have a queue of their own (kubejob.message.upload_queue). Once every row has an
outcome, what is left in it are copies of rows already handled; once the upload is cancelled, rows
nobody is to handle. Workers learn of either within half a second (kubejob.ledger.open_uploads) and
stop consuming the queue; a queue deleted before that would close a worker's channel, hence
UPLOAD_QUEUE_GRACE_SECONDS. The queue is deleted first and then recorded as deleted
(`queue_deleted_at`), so a sweep that fails between the two is done again by the next one:
deleting a queue that is gone is harmless in RabbitMQ, and so is several producers sweeping at once.
"""

import asyncio
import logging
from datetime import timedelta
from typing import NamedTuple

import pika
import pika.exceptions

from kubejob.errors import BrokerUnavailable, LedgerUnavailable
from producer import metrics
from producer.ledger import Ledger
from producer.settings import Settings

log = logging.getLogger(__name__)
# The most queues one sweep deletes; more wait for the next.
SWEEP_LIMIT = 500


def interval(grace_seconds: float) -> float:
    """Seconds between sweeps: a queue goes at most a quarter of its grace late, and at most 10 s."""
    return min(10.0, grace_seconds / 4)


class Swept(NamedTuple):
    found: int  # queues no longer needed, at most SWEEP_LIMIT
    recorded: int  # of them, those this sweep recorded as deleted (another producer may have been first)
    messages: int  # what the queues it deleted held


async def sweep(ledger: Ledger, settings: Settings) -> Swept:
    """Delete the queues no longer needed, at most SWEEP_LIMIT, in one log line if it deleted any; raises
    LedgerUnavailable, BrokerUnavailable."""
    grace = settings.upload_queue_grace_seconds
    unneeded = await ledger.unneeded_queues(queue=settings.queue_name, limit=SWEEP_LIMIT,
                                            grace=timedelta(seconds=grace),
                                            retention=timedelta(days=settings.ledger_retention_days))
    if not unneeded:
        return Swept(0, 0, 0)
    messages = await asyncio.to_thread(delete_queues, settings, [queue for _, queue in unneeded])
    swept = Swept(len(unneeded), await ledger.queues_deleted([upload_id for upload_id, _ in unneeded]), messages)
    if swept.recorded:
        metrics.UPLOAD_QUEUES_DELETED.inc(swept.recorded)
        log.info("upload queues deleted", extra={"queues": swept.recorded, "messages_dropped": swept.messages,
                                                 "grace_seconds": grace})
    return swept


async def sweep_all(ledger: Ledger, settings: Settings) -> None:
    """Sweep until no queue is left to delete: before uploads are forgotten, whose queues would be left behind."""
    while (await sweep(ledger, settings)).found == SWEEP_LIMIT:
        pass


def delete_queues(settings: Settings, queues: list[str]) -> int:
    """Delete the queues over one connection of its own; return the messages they held."""
    try:
        with pika.BlockingConnection(settings.connection_parameters(connection_attempts=1, socket_timeout=5)) as conn:
            channel = conn.channel()
            return sum(channel.queue_delete(queue).method.message_count for queue in queues)
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"deleting uploads' queues: {exc!r}") from exc


async def keep_sweeping(ledger: Ledger, settings: Settings) -> None:
    """Sweep every `interval`, with one warning for each sweep that failed."""
    while True:
        try:
            await sweep(ledger, settings)
        except (LedgerUnavailable, BrokerUnavailable) as exc:
            log.warning("deleting upload queues failed, trying again later", extra={"reason": str(exc)})
        await asyncio.sleep(interval(settings.upload_queue_grace_seconds))
