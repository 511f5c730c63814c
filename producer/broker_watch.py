"""One long-lived connection that tells /readyz, without a round trip, whether RabbitMQ takes publishes.

RabbitMQ tells a connection it blocks publishers (a memory or disk alarm) only once that
connection publishes, so the watch publishes a tiny message, which no queue receives, every
few seconds. A lost connection is opened again after a pause.
"""

import asyncio
import logging

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from producer.settings import Settings

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0
# The default exchange drops a message whose routing key names no queue; this one names none.
_NOWHERE = "kube-job.readiness-probe"


class BrokerWatch:
    """`problem` is None while RabbitMQ is connected and not blocking publishers, else what is wrong.

    `blocked` is the part of it an upload cannot get past: the broker's alarm, while it lasts.
    """

    def __init__(self, settings: Settings) -> None:
        self._parameters = settings.connection_parameters(connection_attempts=1, socket_timeout=5, heartbeat=10)
        self.problem: str | None = "not connected to RabbitMQ yet"
        self.blocked: str | None = None
        self._connection: AsyncioConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._connection and not (self._connection.is_closed or self._connection.is_closing):
            self._connection.close()

    async def _run(self) -> None:
        while True:
            if self._connection is None or self._connection.is_closed:
                self._open()
            elif self._channel is not None and self._channel.is_open and self.problem is None:
                self._channel.basic_publish("", _NOWHERE, b"")
            await asyncio.sleep(PROBE_SECONDS)

    def _open(self) -> None:
        self._channel = None
        self._connection = AsyncioConnection(
            self._parameters,
            on_open_callback=self._on_open,
            on_open_error_callback=lambda _conn, error: self._lost(f"cannot connect to RabbitMQ: {error!r}"),
            on_close_callback=lambda _conn, reason: self._lost(f"connection to RabbitMQ closed: {reason!r}"),
        )

    def _on_open(self, connection: AsyncioConnection) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        self._set(None)

    def _on_blocked(self, _connection: object, frame: pika.frame.Method) -> None:
        self.blocked = f"RabbitMQ blocks publishers: {frame.method.reason}"
        self._set(self.blocked)

    def _on_unblocked(self, _connection: object, _frame: object) -> None:
        self.blocked = None
        self._set(None)

    def _lost(self, reason: str) -> None:
        # A new connection learns afresh whether the broker blocks it.
        self._channel, self.blocked = None, None
        self._set(reason)

    def _set(self, problem: str | None) -> None:
        if problem != self.problem:
            (log.warning if problem else log.info)("broker readiness", extra={"problem": problem})
        self.problem = problem
