"""Copies of failed rows (to "<queue>.retry" or "<queue>.dead"), published in confirm mode.

`ConfirmedCopies` has many copies unconfirmed at once, so that a batch's failures cost one
wait, or none while other rows go on (worker.settle); BlockingChannel.basic_publish cannot,
as it waits for each message's confirm before it returns: this goes through the pika Channel
under it (kubejob.pika_fast). `PlainCopies` is the same interface on basic_publish, one
confirm at a time, for when kubejob.pika_fast is not active.
"""

import logging
from collections.abc import Callable

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from kubejob import frames, pika_fast
from kubejob.errors import BrokerUnavailable

log = logging.getLogger(__name__)


class CopiesNotConfirmed(BrokerUnavailable):
    """The broker nacked or returned a copy: the rows it copies must not be acked (they come back on close)."""


class ConfirmedCopies:
    """Publishes to queues on a channel it puts in confirm mode, many unconfirmed at once.

    The messages' frames are built by kubejob.frames and the ones published since the last
    `flush` go out in one write. `confirm` waits for all sent so far; `is_confirmed` says
    whether one is, without waiting, and `on_confirm` runs whenever a confirm arrives, so that
    the caller can act on it.
    """

    def __init__(self, channel: BlockingChannel, *, on_confirm: Callable[[], None] = lambda: None) -> None:
        self._channel, self._async, self._on_confirmed = channel, pika_fast.async_channel(channel), on_confirm
        self._sent = 0  # the broker numbers the messages of a channel in confirm mode from 1
        self._unconfirmed: set[int] = set()
        self._refused = 0  # nacked or returned since the last `confirm` or `check`
        self._publish: dict[tuple[str, str], frames.Publish] = {}  # by exchange and routing key
        self._pending: list[bytes] = []  # frames not yet handed to pika
        selected: list[object] = []
        self._async.confirm_delivery(self._on_confirm, callback=selected.append)
        pika_fast.wait(channel, lambda: bool(selected))
        self._async.add_on_return_callback(self._on_return)

    def publish(self, routing_key: str, body: bytes, properties: pika.BasicProperties, *, exchange: str = "") -> int:
        """Send a message to `exchange`, by default straight to the queue `routing_key` (mandatory: one it cannot
        route comes back, and counts as refused).

        Returns its number, for `is_confirmed`.
        """
        route = (exchange, routing_key)
        if route not in self._publish:
            self._publish[route] = frames.Publish(self._channel.channel_number, exchange=exchange,
                                                  routing_key=routing_key, mandatory=True,
                                                  frame_max=self._async.connection.params.frame_max)
        self._pending.append(self._publish[route].message(body, properties))
        self._sent += 1
        self._unconfirmed.add(self._sent)
        return self._sent

    def flush(self) -> None:
        """Send what was published since the last flush."""
        if self._pending:
            pika_fast.send_frames(self._async.connection, b"".join(self._pending))
            self._pending = []

    def is_confirmed(self, number: int) -> bool:
        return number not in self._unconfirmed

    def confirm(self) -> None:
        """Wait until the broker has confirmed every message sent; raise CopiesNotConfirmed if it refused any."""
        self.flush()
        waiting = len(self._unconfirmed)
        pika_fast.wait(self._channel, lambda: not self._unconfirmed)
        self.check(waiting)

    def check(self, of: int) -> None:
        """Raise CopiesNotConfirmed if the broker refused any message since the last check (`of`: how many sent)."""
        refused, self._refused = self._refused, 0
        if refused:
            raise CopiesNotConfirmed(f"RabbitMQ refused {refused} of {of} messages (nacked or returned)")

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if method.multiple:
            confirmed = {tag for tag in self._unconfirmed if tag <= method.delivery_tag}
        else:
            confirmed = {method.delivery_tag} & self._unconfirmed
        self._unconfirmed -= confirmed
        if isinstance(method, pika.spec.Basic.Nack):
            self._refused += len(confirmed)
        self._on_confirmed()

    def _on_return(self, _channel: object, method: pika.spec.Basic.Return, _properties: object, _body: bytes) -> None:
        # Its basic.ack follows: it is counted as confirmed, and as refused.
        log.error("message returned by RabbitMQ", extra={"routing_key": method.routing_key,
                                                          "reply_code": method.reply_code,
                                                          "reply_text": method.reply_text})
        self._refused += 1


class PlainCopies:
    """Each copy published and confirmed before `publish` returns."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        channel.confirm_delivery()

    def publish(self, routing_key: str, body: bytes, properties: pika.BasicProperties, *, exchange: str = "") -> int:
        try:
            self._channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise CopiesNotConfirmed(f"RabbitMQ refused a message to {exchange!r} {routing_key!r}: {exc!r}") from exc
        return 0

    def flush(self) -> None:
        """Each copy was sent as it was published."""

    def is_confirmed(self, number: int) -> bool:
        return True

    def confirm(self) -> None:
        """Every copy was confirmed as it was published."""

    def check(self, of: int) -> None:
        """A refusal raised in `publish`."""


Copies = ConfirmedCopies | PlainCopies
