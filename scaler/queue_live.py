"""Queue counts as of now: AMQP's live ready count with the management API's unacked count.

The management API's counts lag by the broker's statistics interval (1 s as shipped, 5 s by
default): with them alone the first Job came seconds after a backlog appeared (bench/reaction.py).
A passive queue declare over AMQP answers with this instant's ready messages and consumers, as
KEDA's `amqp` mode reads them; only the unacked count, which AMQP does not give, comes from the
management API, and only while the queue has consumers (without one, nothing is unacked).
The ready count adds "<queue>.limit" (kubejob.message): rows the broker dead-lettered at its
delivery limit, which only a worker records and moves on, so they need a Job as much as any.

The declare runs on pika's asyncio adapter under one deadline. pika's BlockingConnection has
no timeout once a connection is open: a network that goes silent under it hung the scaler,
SIGTERM included, until a heartbeat gave up more than a minute later.
"""

import asyncio
import contextlib
from typing import Any

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from kubejob import message
from scaler.queue_counts import QueueCounts, QueueReadError
from scaler.queue_depth import ManagementClient


class LiveQueue:
    """Reads one queue's counts; keeps its AMQP connection between polls."""

    def __init__(self, *, management: ManagementClient, parameters: pika.ConnectionParameters,
                 queue: str, timeout_s: float) -> None:
        self._management, self._parameters, self._queue = management, parameters, queue
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._connection: AsyncioConnection | None = None
        self._pending: asyncio.Future | None = None  # the answer this read waits for

    def read(self) -> QueueCounts:
        """The counts now; raises QueueReadError when either source fails or is silent."""
        try:
            ready, consumers = self._loop.run_until_complete(
                asyncio.wait_for(self._ready_and_consumers(), self._timeout_s))
        except TimeoutError as exc:
            self._drop_connection()
            raise QueueReadError(f"AMQP: no answer within {self._timeout_s}s") from exc
        # Only a consumer holds unacknowledged messages. Without one the answer is complete, and
        # a queue declared a moment ago (a quorum queue's first statistics take seconds) does not
        # wait for the management API before its first Job.
        unacked = self._management.read().messages_unacknowledged if consumers else 0
        return QueueCounts(ready + unacked, ready, unacked, consumers)

    def close(self) -> None:
        self._management.close()
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            closed = self._loop.create_future()
            connection.add_on_close_callback(lambda *_: _settle(closed, None))
            connection.close()
            with contextlib.suppress(TimeoutError):
                self._loop.run_until_complete(asyncio.wait_for(closed, self._timeout_s))
        self._loop.close()

    async def _ready_and_consumers(self) -> tuple[int, int]:
        try:
            connection = await self._connected()
            ready, consumers = await self._declared(connection, self._queue)
            # Rows the broker dead-lettered at its delivery limit wait there for a worker to record them.
            limited, _ = await self._declared(connection, message.limit_queue(self._queue))
            return ready + limited, consumers
        except (pika.exceptions.AMQPError, AMQPConnectorException) as exc:
            # A refused connection fails in pika's connection workflow, outside AMQPError.
            self._drop_connection()
            raise QueueReadError(f"AMQP unreachable: {type(exc).__name__}: {exc}") from exc

    async def _declared(self, connection: AsyncioConnection, queue: str) -> tuple[int, int]:
        try:
            self._pending = declared = self._loop.create_future()
            connection.channel(on_open_callback=lambda channel: self._declare(channel, queue, declared))
            method = await declared
            return method.message_count, method.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # not declared yet: no upload has arrived
                return 0, 0
            raise QueueReadError(f"AMQP passive declare refused: {exc.reply_code} {exc.reply_text}") from exc

    async def _connected(self) -> AsyncioConnection:
        if self._connection is not None and self._connection.is_open:
            return self._connection
        self._pending = opened = self._loop.create_future()
        self._connection = AsyncioConnection(
            self._parameters,
            on_open_callback=lambda conn: _settle(opened, conn),
            on_open_error_callback=lambda _conn, error: _settle(opened, error=error),
            on_close_callback=self._on_closed,
            custom_ioloop=self._loop,
        )
        return await opened

    def _on_closed(self, connection: AsyncioConnection, error: BaseException) -> None:
        # A connection dropped after a timeout may close much later, during another read.
        if connection is self._connection:
            self._connection = None
            if self._pending is not None:
                _settle(self._pending, error=error)

    def _declare(self, channel: Any, queue: str, declared: asyncio.Future) -> None:
        # A 404 closes the channel; closing it ourselves after the answer keeps one per poll.
        channel.add_on_close_callback(lambda _channel, reason: _settle(declared, error=reason))

        def answered(frame: Any) -> None:
            _settle(declared, frame.method)
            channel.close()
        channel.queue_declare(queue, passive=True, callback=answered)

    def _drop_connection(self) -> None:
        # Not waited for: on a silent network the close handshake would be silent too, and pika
        # tears the socket down once the heartbeat misses.
        connection, self._connection = self._connection, None
        if connection is not None and not (connection.is_closing or connection.is_closed):
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()


def _settle(future: asyncio.Future, result: object = None, *, error: BaseException | None = None) -> None:
    """Resolve the future once; later callbacks for the same wait (a close after the answer) are ignored."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
