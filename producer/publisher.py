"""Publishes with publisher confirms, many messages in flight, over pika's asyncio adapter.

pika's BlockingConnection waits for each confirm in turn; keeping many messages unconfirmed
(the caller bounds how many, see producer.routes) lets the broker confirm them in batches.
pika opens the connection and the channel and handles the confirms; with kubejob.pika_fast
active, the messages' frames are built by kubejob.frames, handed to pika's output directly,
and sent in few socket writes.
"""

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import Callable

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic

from kubejob import frames, pika_fast
from kubejob.errors import BrokerUnavailable, Permanent
from kubejob.message import declarations, migration_hint, queue_arguments
from producer.metrics import CONFIRM_WAIT_SECONDS
from producer.settings import Settings

# The longest one upload holds the event loop, which also answers the probes and the other uploads.
# A time, not a row count: what a count of rows takes grows with their size and the machine's load, and
# a probe waited that long (bench load).
YIELD_SECONDS = 0.005


# A body at least this large is remembered with its place, so that the broker's refusal of one can name it.
LARGE_BODY_BYTES = 1024 * 1024
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


class UploadRefused(Permanent):
    """The broker cannot take this file as it is: the upload is `failed`, and a retry of the same file fails too."""

    def __init__(self, reason: str, *, upload_id: str) -> None:
        super().__init__(reason)
        self.upload_id = upload_id


class MessageTooLarge(Permanent):
    """The broker refused a message over its max_message_size: no retry of the same file can succeed.

    `published` is the message's place among those this publisher sent (1 for the first).
    """

    def __init__(self, *, published: int, size: int, limit: int) -> None:
        super().__init__(f"RabbitMQ refused a message of {size} bytes, over its max_message_size of {limit}")
        self.published, self.size, self.limit = published, size, limit


class ConfirmingPublisher:
    """One connection and confirm-mode channel, opened per upload (`async with`), publishing into `queue`, the
    upload's own, which it declares after the queues every upload of QUEUE_NAME shares."""

    def __init__(self, settings: Settings, *, queue: str) -> None:
        self._settings = settings
        self._queue = queue
        self._loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._changed = asyncio.Event()
        # Delivery tags in publish order: a multiple-ack confirms a prefix of it.
        self._unconfirmed: collections.deque[int] = collections.deque()
        self._published = 0
        self._yielded = time.monotonic()
        self._failure: str | None = None
        self._refused: MessageTooLarge | None = None
        self._large: list[tuple[int, int]] = []  # (place, size) of each body of LARGE_BODY_BYTES or more
        self._fast = pika_fast.active(settings.kubejob_pika_fast)
        self._frames: frames.Publish | None = None
        self._channel: pika.channel.Channel | None = None
        self._declaring: str | None = None  # the queue being declared, until all are

    async def __aenter__(self) -> "ConfirmingPublisher":
        self._connection = AsyncioConnection(
            self._settings.connection_parameters(
                connection_attempts=1, socket_timeout=5,
                blocked_connection_timeout=self._settings.confirm_timeout_seconds,
            ),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda _conn, error: self._fail(f"cannot connect to RabbitMQ: {error!r}"),
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._loop,
        )
        try:
            await asyncio.wait_for(self._opened, self._settings.confirm_timeout_seconds)
        except TimeoutError as exc:
            await self._close()
            raise BrokerUnavailable("timed out opening a channel to RabbitMQ") from exc
        except BrokerUnavailable:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def publish(self, body: bytes, properties: pika.BasicProperties) -> None:
        """Send one message, unconfirmed; the caller bounds how many wait (`wait_until_confirmed`)."""
        self._raise_if_failed()
        assert self._frames is not None and self._channel is not None
        if self._fast:
            # Channel.basic_publish would marshal the same frames (kubejob.frames) at four times the cost.
            pika_fast.send_frames(self._connection, self._frames.message(body, properties))
        else:
            self._channel.basic_publish("", self._queue, body, properties, mandatory=True)
        self._published += 1
        self._unconfirmed.append(self._published)
        if len(body) >= LARGE_BODY_BYTES:
            self._large.append((self._published, len(body)))
        if time.monotonic() - self._yielded >= YIELD_SECONDS:
            await asyncio.sleep(0)  # let other requests and the broker's confirms in between
            self._yielded = time.monotonic()

    async def wait_until_confirmed(self, count: int) -> None:
        """Return once the broker has confirmed the first `count` messages."""
        await self._wait_until(lambda: self.confirmed >= count)

    @property
    def confirmed(self) -> int:
        """How many messages, counted from the first published, the broker has confirmed."""
        return self._unconfirmed[0] - 1 if self._unconfirmed else self._published

    async def wait_for_confirms(self) -> int:
        """Return the number of messages once the broker has confirmed every one of them."""
        await self._wait_until(lambda: not self._unconfirmed)
        return self._published

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        # Callbacks run on this loop, so nothing changes between the check and clear().
        started = time.monotonic()
        while True:
            self._raise_if_failed()
            if done():
                CONFIRM_WAIT_SECONDS.observe(time.monotonic() - started)
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), self._settings.confirm_timeout_seconds)
            except TimeoutError:
                self._fail(f"RabbitMQ confirmed nothing for {self._settings.confirm_timeout_seconds}s")

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        if self._fast:
            pika_fast.join_writes(self._connection)
        self._frames = frames.Publish(channel.channel_number, exchange="", routing_key=self._queue, mandatory=True,
                                      frame_max=self._connection.params.frame_max)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(lambda *_: self._fail(f"RabbitMQ could not route to {self._queue!r}"))
        family = self._settings.queue_name
        pending = [*declarations(family), (self._queue, queue_arguments(family))]

        def declare_next(_frame: object) -> None:
            if not pending:
                self._declaring = None
                if not self._opened.done():
                    self._opened.set_result(None)
                return
            name, arguments = pending.pop(0)
            self._declaring = name
            channel.queue_declare(name, durable=True, arguments=arguments, callback=declare_next)

        channel.confirm_delivery(self._on_confirm, callback=declare_next)

    def _on_channel_closed(self, _channel: object, reason: Exception) -> None:
        if isinstance(reason, ChannelClosedByBroker) and reason.reply_code == 406 and self._declaring:
            self._fail(migration_hint(self._declaring, reason.reply_text))
            return
        too_large = _TOO_LARGE.search(str(reason))
        if too_large:
            size, limit = map(int, too_large.groups())
            place = next((place for place, length in self._large if length > limit), self.confirmed + 1)
            self._refused = MessageTooLarge(published=place, size=size, limit=limit)
        self._fail(f"channel closed: {reason}")

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, Basic.Nack):
            self._fail("RabbitMQ refused to store a message (nack)")
            return
        if method.multiple:
            while self._unconfirmed and self._unconfirmed[0] <= method.delivery_tag:
                self._unconfirmed.popleft()
        elif self._unconfirmed and self._unconfirmed[0] == method.delivery_tag:
            self._unconfirmed.popleft()
        else:
            self._unconfirmed.remove(method.delivery_tag)
        self._changed.set()

    def _on_connection_closed(self, _connection: object, reason: Exception) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        self._fail(f"connection to RabbitMQ closed: {reason!r}")

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        if not self._opened.done():
            self._opened.set_exception(BrokerUnavailable(reason))
        self._changed.set()

    def _raise_if_failed(self) -> None:
        if self._refused is not None:
            raise self._refused
        if self._failure is not None:
            raise BrokerUnavailable(self._failure)

    async def _close(self) -> None:
        if self._connection.is_closed:
            return
        if not self._connection.is_closing:
            self._connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), 5)
