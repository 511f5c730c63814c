"""Reads deliveries off the connection in batches, instead of one pika event per frame and per message.

pika reads the socket 4 KiB at a time and decodes one frame at a time, runs it through its
callback registry and the channel's content assembler, and queues one event per message for
the BlockingChannel to dispatch: much of a draining worker's CPU. With
kubejob.pika_fast active, the connection reads up to its RECV_BYTES at a time, every whole
message for one of our consumers is read with `kubejob.frames.read_delivery`, and the
messages of one receive are dispatched as a single event. Any other frame (a reply, a
confirm, a heartbeat, a message whose headers pika must decode) goes to pika's own code,
after the messages before it, so everything is dispatched in the order it arrived.
`PlainDeliveries` is the same interface on pika's public basic_consume, for when it is not:
there pika reads every message, and the consumer's `on_message` gets each one.
"""

import logging
import uuid
from collections.abc import Callable

import pika
from pika.adapters.blocking_connection import BlockingChannel

from kubejob import frames, message, pika_fast

log = logging.getLogger(__name__)


class _Batch:
    """A BlockingChannel event: the messages one receive brought, dispatched in order with pika's own events."""

    __slots__ = ("deliver", "messages")

    def __init__(self, deliver: Callable[[list[message.Delivery]], None], messages: list[message.Delivery]) -> None:
        self.deliver, self.messages = deliver, messages

    def dispatch(self) -> None:
        self.deliver(self.messages)


class Deliveries:
    """The consumers of one BlockingChannel, fed in batches; `on_batch` runs where pika dispatches events.

    What is received is kept as it came, and joined once enough is in for the next whole frame
    or message (a message's content header says how much that is), so that reading a message
    costs time linear in its size. A message whose body is larger than `max_body_bytes` is not
    kept: its body frames are dropped as they arrive, and it is handed on as a Delivery with an
    empty body and `dropped` its size.
    """

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel,
                 on_batch: Callable[[list[message.Delivery]], None], *, max_body_bytes: int) -> None:
        self._channel, self._on_batch = channel, on_batch
        self._number, self._max_body = channel.channel_number, max_body_bytes
        self._tags: set[bytes] = set()
        self._received = pika_fast.read_received(connection, self._on_received)
        self._body_max = self._received.body_max  # a body frame's largest payload on this connection
        leftover = self._received.leftover
        self._chunks = [leftover] if leftover else []  # received, not yet read
        self._held = len(leftover)
        self._needed = 0  # bytes to hold before reading on: all of a frame, or of a message, that began
        self._dropping: frames.Head | None = None  # the message whose body frames are being dropped
        self._dropped = 0  # of its body, so far

    @property
    def receiving(self) -> bool:
        """Part of a frame or of a message is in and the rest is on its way: the queue is not empty."""
        return self._held > 0 or self._dropping is not None

    def consume(self, queue: str, on_message: Callable[..., None]) -> str:
        """basic_consume with a tag known before the first delivery can arrive; `on_message` gets what pika reads."""
        tag = f"kubejob-{uuid.uuid4().hex}"
        self._tags.add(tag.encode())
        return self._channel.basic_consume(queue, on_message, consumer_tag=tag)

    def cancel(self, tag: str) -> None:
        self._channel.basic_cancel(tag)
        self._tags.discard(tag.encode())

    def _on_received(self, data: bytes) -> None:
        self._received.count(len(data))
        self._chunks.append(data)
        self._held += len(data)
        if self._held < self._needed:
            return
        buffer = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        offset = 0
        batch: list[message.Delivery] = []
        self._needed = 0
        try:
            while offset < len(buffer):
                if self._dropping is not None:
                    body = frames.read_body_frame(buffer, offset, self._number)
                    if body is False:
                        self._needed = frames.frame_length(buffer, offset)
                        break
                    if body:
                        offset = body[0]
                        self._drop(body[1], batch)
                        continue
                else:
                    read = frames.read_delivery(buffer, offset, self._number, self._tags)
                    if read:
                        offset, delivery = read
                        batch.append(kept(delivery, self._max_body))
                        continue
                    head = frames.read_head(buffer, offset, self._number, self._tags)
                    if head and head.body_size > self._max_body:
                        offset = head.end
                        self._start_dropping(head)
                        continue
                    if read is False:
                        # A message's head says how much it needs; anything shorter needs one more receive.
                        whole = frames.delivery_end(head, self._body_max) if head else 0
                        self._needed = max(whole, len(buffer) + 1) - offset
                        break
                end = frames.frame_end(buffer, offset)
                if end is None:
                    self._needed = frames.frame_length(buffer, offset)
                    break
                self._queue(batch)
                frame, batch, offset = buffer[offset:end], [], end
                self._received.to_pika(frame)
        finally:
            rest = buffer[offset:]
            self._chunks, self._held = [rest] if rest else [], len(rest)
        self._queue(batch)

    def _start_dropping(self, head: frames.Head) -> None:
        _log_dropping(head.tag, head.body_size, self._max_body)
        self._dropping, self._dropped = head, 0

    def _drop(self, size: int, batch: list[message.Delivery]) -> None:
        """One body frame of the message being dropped is gone; after its last, the message is handed on."""
        head = self._dropping
        assert head is not None
        self._dropped += size
        if self._dropped >= head.body_size:
            batch.append(message.Delivery(head.tag, head.properties, b"", head.redelivered, dropped=head.body_size))
            self._dropping = None

    def _queue(self, batch: list[message.Delivery]) -> None:
        if batch:
            pika_fast.dispatch(self._channel, _Batch(self._on_batch, batch))


class PlainDeliveries:
    """Deliveries as pika reads them, one by one, for when kubejob.pika_fast is not active: each to `on_message`.

    pika holds a message until all of it is in, so one over MAX_MESSAGE_BYTES is held in memory
    once before its body is dropped (`kept`), and a message still arriving is not seen (`receiving`).
    """

    receiving = False

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel

    def consume(self, queue: str, on_message: Callable[..., None]) -> str:
        return self._channel.basic_consume(queue, on_message)

    def cancel(self, tag: str) -> None:
        self._channel.basic_cancel(tag)


def kept(delivery: message.Delivery, max_body_bytes: int) -> message.Delivery:
    """`delivery`, or, when its body (which came whole) is over `max_body_bytes`, the same without it."""
    if len(delivery.body) <= max_body_bytes:
        return delivery
    _log_dropping(delivery.tag, len(delivery.body), max_body_bytes)
    return delivery._replace(body=b"", dropped=len(delivery.body))


def _log_dropping(tag: int, size: int, limit: int) -> None:
    log.warning("message body larger than MAX_MESSAGE_BYTES, not kept",
                extra={"delivery_tag": tag, "body_bytes": size, "max_message_bytes": limit})
