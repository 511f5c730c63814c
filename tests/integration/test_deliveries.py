"""worker.deliveries against a real RabbitMQ: every message once, in delivery order, as pika would read it."""

import threading
import time

import pika
import pytest

from kubejob import message
from kubejob.settings import LedgerSettings
from tests.helpers.broker import Broker
from worker.copies import ConfirmedCopies, CopiesNotConfirmed
from worker.deliveries import Deliveries

MAX_BODY_BYTES = LedgerSettings.model_fields["max_message_bytes"].default  # as shipped

# A retried row as the broker delivers it (x-death is an array: pika reads that header), a body
# larger than a frame (and than one receive), an empty one, and rows in between.
MESSAGES = [
    (b'{"id":"1"}', pika.BasicProperties(delivery_mode=2, headers={"upload_id": "u", "row": 1})),
    (b'{"id":"2"}', pika.BasicProperties(headers={"x-death": [{"count": 1, "queue": "q.retry"}], "row": 2})),
    (b"x" * 700_000, pika.BasicProperties(message_id="big", headers={"row": 3})),
    (b"", pika.BasicProperties(content_type="application/json")),
    *((f'{{"id":"{n}"}}'.encode(), pika.BasicProperties(headers={"row": n, "ok": True})) for n in range(5, 3_000)),
]


class Received:
    """What the consumer was given, and by which reader."""

    def __init__(self) -> None:
        self.deliveries: list[message.Delivery] = []
        self.by_pika = 0

    def on_batch(self, batch: list[message.Delivery]) -> None:
        self.deliveries += batch

    def on_message(self, _channel: object, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties,
                   body: bytes) -> None:
        self.by_pika += 1
        self.deliveries.append(message.Delivery(method.delivery_tag, properties, body, method.redelivered))


def publish(broker: Broker, queue: str, messages: list[tuple[bytes, pika.BasicProperties]]) -> None:
    with broker.connection() as conn:
        channel = conn.channel()
        channel.queue_declare(queue, arguments={"x-queue-type": "classic"})
        for body, properties in messages:
            channel.basic_publish("", queue, body, properties)


def test_every_message_arrives_once_in_order_with_what_was_published(broker: Broker, queue_name: str) -> None:
    publish(broker, queue_name, MESSAGES)
    received = Received()
    with broker.connection() as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=len(MESSAGES))
        deliveries = Deliveries(conn, channel, received.on_batch, max_body_bytes=MAX_BODY_BYTES)
        tag = deliveries.consume(queue_name, received.on_message)
        deadline = time.monotonic() + 30
        while len(received.deliveries) < len(MESSAGES) and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        deliveries.cancel(tag)
        channel.basic_ack(received.deliveries[-1].tag, multiple=True)
    assert [d.tag for d in received.deliveries] == list(range(1, len(MESSAGES) + 1))
    assert [d.body for d in received.deliveries] == [body for body, _ in MESSAGES]
    assert [d.properties.headers for d in received.deliveries] == [p.headers for _, p in MESSAGES]
    assert received.deliveries[2].properties.message_id == "big"
    assert received.deliveries[3].properties.content_type == "application/json"
    assert received.by_pika == 1  # the x-death one; pika reads nothing else


@pytest.mark.timeout(60)
def test_a_steady_stream_keeps_the_connection_alive_without_heartbeats(broker: Broker, queue_name: str) -> None:
    """The broker sends no heartbeat while it delivers, so pika's checker must see the bytes read here."""
    with broker.connection() as conn:
        conn.channel().queue_declare(queue_name, arguments={"x-queue-type": "classic"})
    stop = threading.Event()

    def trickle() -> None:
        with broker.connection() as conn:
            channel = conn.channel()
            while not stop.wait(0.05):
                channel.basic_publish("", queue_name, b"{}")

    publisher = threading.Thread(target=trickle, daemon=True)
    publisher.start()
    received = Received()
    params = pika.ConnectionParameters(host=broker.host, port=broker.port, heartbeat=1,
                                       credentials=pika.PlainCredentials(broker.user, broker.password))
    try:
        with pika.BlockingConnection(params) as conn:
            channel = conn.channel()
            deliveries = Deliveries(conn, channel, received.on_batch, max_body_bytes=MAX_BODY_BYTES)
            deliveries.consume(queue_name, received.on_message)
            ends = time.monotonic() + 14  # pika checks every heartbeat + 5 s: two checks
            while time.monotonic() < ends:
                conn.process_data_events(time_limit=0.2)
                if received.deliveries:
                    channel.basic_ack(received.deliveries[-1].tag, multiple=True)
            assert conn.is_open
    finally:
        stop.set()
        publisher.join()
    assert len(received.deliveries) > 100 and received.by_pika == 0


def test_copies_are_confirmed_together_and_a_refused_one_raises(broker: Broker, queue_name: str) -> None:
    with broker.connection() as conn:
        channel = conn.channel()
        channel.queue_declare(queue_name, arguments={"x-queue-type": "classic"})
        copies = ConfirmedCopies(channel)
        for n in range(500):
            copies.publish(queue_name, str(n).encode(), pika.BasicProperties())
        copies.confirm()
        assert channel.queue_declare(queue_name, passive=True).method.message_count == 500
        # A full queue that rejects publishes: the broker nacks what it cannot take.
        full = f"{queue_name}.full"
        channel.queue_declare(full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        for _ in range(3):
            copies.publish(full, b"{}", pika.BasicProperties())
        with pytest.raises(CopiesNotConfirmed, match="refused 2 of 3"):
            copies.confirm()
        copies.publish(f"{queue_name}.nowhere", b"{}", pika.BasicProperties())  # returned: no such queue
        with pytest.raises(CopiesNotConfirmed, match="refused 1 of 1"):
            copies.confirm()
        channel.queue_delete(full)
