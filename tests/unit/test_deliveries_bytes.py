"""worker.deliveries' byte handling: a large message is joined once, one too large to keep is never held."""

import types

import pika
import pytest
from pika import frame, spec

from kubejob import frames, message, pika_fast
from kubejob.pika_fast import RECV_BYTES
from worker.deliveries import Deliveries

FRAME_MAX = 131_072
TAG = "kubejob-test"


def delivery(body: bytes, tag: int) -> bytes:
    """The frames RabbitMQ sends for one row to our consumer on channel 1, its body in full frames."""
    _, properties = message.encode({"id": str(tag)}, upload_id="u1", row_number=tag, line=tag + 1)
    body_max = FRAME_MAX - frames.FRAME_OVERHEAD
    return b"".join([
        frame.Method(1, spec.Basic.Deliver(consumer_tag=TAG, delivery_tag=tag, exchange="", routing_key="q")).marshal(),
        frame.Header(1, len(body), properties).marshal(),
        *(frame.Body(1, body[start:start + body_max]).marshal() for start in range(0, len(body), body_max)),
    ])


class Fed:
    """A Deliveries whose connection is a stand-in for kubejob.pika_fast's Received, fed receive by receive; notes
    what it read and how much."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, max_body_bytes: int) -> None:
        self.batches: list[list[message.Delivery]] = []
        self.to_pika: list[bytes] = []
        self.read_bytes = 0  # the size of every buffer messages were read from: what joining them cost
        self._reading: bytes | None = None
        self.counted = 0  # the bytes said to be received, as pika's heartbeat checker reads them
        self.received = types.SimpleNamespace(leftover=b"", body_max=FRAME_MAX - 8, count=self._count,
                                              to_pika=self.to_pika.append)

        def read_received(_connection: object, on_data):
            self.on_data = on_data
            return self.received

        monkeypatch.setattr(pika_fast, "read_received", read_received)
        monkeypatch.setattr(pika_fast, "dispatch", lambda _channel, event: event.dispatch())
        channel = types.SimpleNamespace(channel_number=1, basic_consume=lambda *args, **kwargs: TAG)
        self.deliveries = Deliveries(None, channel, self.batches.append,  # type: ignore[arg-type]
                                     max_body_bytes=max_body_bytes)
        self.deliveries._tags.add(TAG.encode())
        for name in ("read_delivery", "read_head", "read_body_frame"):
            monkeypatch.setattr(frames, name, self._counting(getattr(frames, name)))

    def _count(self, size: int) -> None:
        self.counted += size

    def _counting(self, read):
        def counted(data: bytes, offset: int, *args: object):
            if data is not self._reading:
                self._reading, self.read_bytes = data, self.read_bytes + len(data)
            return read(data, offset, *args)
        return counted

    def feed(self, data: bytes) -> None:
        """`data` as the socket gives it, RECV_BYTES at a time."""
        for start in range(0, len(data), RECV_BYTES):
            self.on_data(data[start:start + RECV_BYTES])

    @property
    def delivered(self) -> list[message.Delivery]:
        return [d for batch in self.batches for d in batch]


def test_a_large_message_is_read_once_all_of_it_is_in(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"id":"2","blob":"' + b"x" * 30_000_000 + b'"}'
    data = delivery(b'{"id":"1"}', 1) + delivery(body, 2) + delivery(b'{"id":"3"}', 3)
    fed = Fed(monkeypatch, max_body_bytes=64 * 1024**2)
    fed.feed(data[:1000])
    assert fed.deliveries.receiving  # the first receive held a message's start
    fed.feed(data[1000:])
    assert [(d.tag, d.body, d.dropped) for d in fed.delivered] == [(1, b'{"id":"1"}', 0), (2, body, 0),
                                                                   (3, b'{"id":"3"}', 0)]
    # Joined again at every receive, the 115 receives of this message would read about 58 times its size.
    assert fed.read_bytes < 3 * len(data), fed.read_bytes
    assert not fed.deliveries.receiving and fed.counted == len(data) and fed.to_pika == []


def test_a_message_over_the_limit_is_dropped_as_it_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    size = 20_000_000
    big = delivery(b"x" * size, 2)
    data = delivery(b'{"id":"1"}', 1) + big + frame.Heartbeat().marshal() + delivery(b'{"id":"3"}', 3)
    fed = Fed(monkeypatch, max_body_bytes=1024**2)
    held = 0
    for start in range(0, len(data), RECV_BYTES):
        fed.on_data(data[start:start + RECV_BYTES])
        held = max(held, fed.deliveries._held)
        assert fed.deliveries.receiving or start + RECV_BYTES >= len(data)
    assert [(d.tag, d.body, d.dropped) for d in fed.delivered] == [(1, b'{"id":"1"}', 0), (2, b"", size),
                                                                   (3, b'{"id":"3"}', 0)]
    assert fed.delivered[1].properties.headers["row"] == 2
    assert held <= FRAME_MAX + RECV_BYTES, held  # never more than a frame and a receive
    assert fed.read_bytes < 2 * len(data), fed.read_bytes
    assert fed.to_pika == [frame.Heartbeat().marshal()] and not fed.deliveries.receiving


def test_a_message_over_the_limit_that_came_in_one_receive_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    fed = Fed(monkeypatch, max_body_bytes=100)
    fed.feed(delivery(b"y" * 200, 1) + delivery(b"{}", 2))
    assert [(d.tag, d.body, d.dropped) for d in fed.delivered] == [(1, b"", 200), (2, b"{}", 0)]


def test_the_head_of_a_message_pika_would_read_is_read_too() -> None:
    properties = pika.BasicProperties(headers={"x-death": [{"count": 1}], "row": 4})
    data = delivery(b"", 1)[:0] + frame.Method(1, spec.Basic.Deliver(consumer_tag=TAG, delivery_tag=9, exchange="",
                                                                     routing_key="q")).marshal()
    data += frame.Header(1, 5_000_000, properties).marshal()
    assert frames.read_delivery(data, 0, 1, {TAG.encode()}) is None
    head = frames.read_head(data, 0, 1, {TAG.encode()})
    assert head and (head.tag, head.body_size, head.properties.headers["row"], head.end) == (9, 5_000_000, 4, len(data))
