"""Queues' ready counts and consumers as of now, over AMQP.

The management API's counts lag by the broker's statistics interval (1 s as shipped, 5 s by
default), and a new quorum queue has none for its first seconds: with them alone the first Job
came seconds after a backlog appeared (bench/reaction.py). A passive queue declare over AMQP
answers with this instant's ready messages and consumers, as KEDA's `amqp` mode reads them.

One read takes many queues (every served upload has its own, kubejob.message) on one channel,
one declare after the other. A queue that no longer exists (an upload's queue deleted since the
ledger listed it) closes the channel with 404: it is left out of the answer, and the read goes
on with the next queue on a new channel.

The declares run on pika's asyncio adapter under one deadline for the whole read. pika's
BlockingConnection has no timeout once a connection is open: a network that goes silent under
it hung the scaler, SIGTERM included, until a heartbeat gave up more than a minute later.
"""

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from scaler.queue_counts import QueueReadError


class Live(NamedTuple):
    """One queue's counts from a passive declare."""

    ready: int
    consumers: int


class LiveQueues:
    """Reads queues' counts; keeps its AMQP connection between reads."""

    def __init__(self, *, parameters: pika.ConnectionParameters, timeout_s: float) -> None:
        self._parameters, self._timeout_s = parameters, timeout_s
        self._loop = asyncio.new_event_loop()
        self._connection: AsyncioConnection | None = None
        self._pending: asyncio.Future | None = None  # the answer this read waits for
        self._channel_now: Any = None  # the channel of that answer

    def read(self, queues: Sequence[str]) -> dict[str, Live]:
        """The counts of each of `queues` that exists, now; raises QueueReadError when AMQP fails or is silent."""
        try:
            return self._loop.run_until_complete(asyncio.wait_for(self._read(queues), self._timeout_s))
        except TimeoutError as exc:
            self._drop_connection()
            raise QueueReadError(f"AMQP: no answer within {self._timeout_s}s ({len(queues)} queues)") from exc

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            closed = self._loop.create_future()
            connection.add_on_close_callback(lambda *_: _settle(closed, None))
            connection.close()
            with contextlib.suppress(TimeoutError):
                self._loop.run_until_complete(asyncio.wait_for(closed, self._timeout_s))
        self._loop.close()

    async def _read(self, queues: Sequence[str]) -> dict[str, Live]:
        try:
            connection = await self._connected()
            found: dict[str, Live] = {}
            channel = None
            for queue in queues:
                if channel is None:
                    channel = await self._channel(connection)
                live = await self._declared(channel, queue)
                if live is None:
                    channel = None  # the broker closed it with the 404
                else:
                    found[queue] = live
            if channel is not None:
                self._channel_now = None
                channel.close()  # not waited for: the next read opens its own
            return found
        except (pika.exceptions.AMQPError, AMQPConnectorException) as exc:
            # A refused connection fails in pika's connection workflow, outside AMQPError.
            self._drop_connection()
            raise QueueReadError(f"AMQP unreachable: {type(exc).__name__}: {exc}") from exc

    async def _channel(self, connection: AsyncioConnection) -> Any:
        self._pending = opened = self._loop.create_future()
        connection.channel(on_open_callback=lambda channel: _settle(opened, channel))
        self._channel_now = channel = await opened
        channel.add_on_close_callback(self._on_channel_closed)
        return channel

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        # A 404 closes the channel in the middle of its declare; one this read closed itself is done with.
        if channel is self._channel_now and self._pending is not None:
            _settle(self._pending, error=reason)

    async def _declared(self, channel: Any, queue: str) -> Live | None:
        """The queue's counts; None if it does not exist, which closes `channel`."""
        self._pending = declared = self._loop.create_future()
        channel.queue_declare(queue, passive=True, callback=lambda frame: _settle(declared, frame.method))
        try:
            method = await declared
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # not declared yet, or deleted since it was listed
                return None
            raise QueueReadError(f"AMQP passive declare of {queue!r} refused: {exc.reply_code} "
                                 f"{exc.reply_text}") from exc
        return Live(method.message_count, method.consumer_count)

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
