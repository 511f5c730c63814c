"""Rows the broker dead-lettered on its own, at the queue's delivery limit: recorded, then moved to "<queue>.dead".

They wait in "<queue>.limit" (see kubejob.message) until a worker records each as failed in
the ledger, so that its upload still reaches `done`, and moves it on with an `error` header.
"""

import collections
import logging

import pika
from pika.adapters.blocking_connection import BlockingChannel

from kubejob import message
from worker.copies import Copies
from worker.ledger import Ledger, RowOutcome

log = logging.getLogger(__name__)

_BATCH = 100


def move_limit_queue(channel: BlockingChannel, copies: Copies, queue: str, ledger: Ledger) -> int:
    """Record and move every message in "<queue>.limit"; return how many.

    Raises LedgerUnavailable, or CopiesNotConfirmed when the broker refused a copy; either way
    the messages not acked go back to "<queue>.limit".
    """
    moved = 0
    while taken := _take(channel, message.limit_queue(queue)):
        errors = [_error(properties) for _, properties, _ in taken]
        outcomes = []
        for (_, properties, body), error in zip(taken, errors, strict=True):
            try:
                row = message.decode(body, properties)
            except message.BadMessage:
                continue  # names no upload to count it in; still moved to .dead below
            outcomes.append(RowOutcome(row.upload_id, row.row, row.attempt, error=error, data=row.data))
        # Unacked until recorded: if this fails, the messages go back to the queue for the next try.
        ledger.record(outcomes, redelivered=collections.Counter())
        for (_, properties, body), error in zip(taken, errors, strict=True):
            copies.publish(message.dead_letter_queue(queue), body, message.dead_properties(properties, error=error))
            log.error("giving up on row the broker dead-lettered",
                      extra={"queue": queue, "message_id": properties.message_id, "error": error})
        copies.confirm()  # all of the batch's copies at once, before their originals are acked
        channel.basic_ack(taken[-1][0], multiple=True)
        moved += len(taken)
    return moved


def _take(channel: BlockingChannel, queue: str) -> list[tuple[int, pika.BasicProperties, bytes]]:
    taken: list[tuple[int, pika.BasicProperties, bytes]] = []
    while len(taken) < _BATCH:
        method, properties, body = channel.basic_get(queue)
        if method is None:
            break
        taken.append((method.delivery_tag, properties, body))
    return taken


def _error(properties: pika.BasicProperties) -> str:
    return (f"RabbitMQ dead-lettered it ({message.death_reason(properties)}) after more than "
            f"{message.DELIVERY_LIMIT} deliveries without an ack: workers died or stopped while holding it")
