"""Queue counts as of now: AMQP's live ready count with the management API's unacked count.

The management API's counts lag by the broker's statistics interval (1 s as shipped, 5 s by
default): with them alone the first Job came 3-4 s after a backlog appeared (bench/reaction.py).
A passive queue declare over AMQP answers with this instant's ready messages and consumers, as
KEDA's `amqp` mode reads them; only the unacked count, which AMQP does not give, comes from the
management API.
"""

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from scaler.queue_depth import ManagementClient, QueueCounts, QueueReadError


class LiveQueue:
    """Reads one queue's counts; keeps its AMQP connection between polls."""

    def __init__(self, *, management: ManagementClient, parameters: pika.ConnectionParameters, queue: str) -> None:
        self._management, self._parameters, self._queue = management, parameters, queue
        self._connection: pika.BlockingConnection | None = None

    def read(self) -> QueueCounts:
        """The counts now; raises QueueReadError when either source fails."""
        unacked = self._management.read().messages_unacknowledged
        ready, consumers = self._ready_and_consumers()
        return QueueCounts(ready + unacked, ready, unacked, consumers)

    def close(self) -> None:
        self._management.close()
        if self._connection and self._connection.is_open:
            self._connection.close()
        self._connection = None

    def _ready_and_consumers(self) -> tuple[int, int]:
        try:
            if not (self._connection and self._connection.is_open):
                self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            declared = channel.queue_declare(self._queue, passive=True).method
            channel.close()
            return declared.message_count, declared.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # not declared yet: no upload has arrived
                return 0, 0
            raise QueueReadError(f"AMQP passive declare refused: {exc.reply_code} {exc.reply_text}") from None
        except (pika.exceptions.AMQPError, AMQPConnectorException) as exc:
            # A handshake that times out raises from pika's connection workflow, outside AMQPError.
            self._connection = None
            raise QueueReadError(f"AMQP unreachable: {type(exc).__name__}: {exc}") from None
