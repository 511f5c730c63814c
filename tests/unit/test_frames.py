"""kubejob.frames builds the very bytes pika sends for a basic.publish, and reads frames as pika does."""

import decimal

import pika
import pytest
from pika import frame, spec

from kubejob import message
from kubejob.frames import Publish, read_delivery
from kubejob.message import Delivery

pika_decode_frame = frame.decode_frame

FRAME_MAX = 131_072


def pika_frames(body: bytes, properties: pika.BasicProperties, *, routing_key: str = "jobs",
                frame_max: int = FRAME_MAX) -> bytes:
    """What pika's Connection._send_message marshals for Channel.basic_publish."""
    body_max = frame_max - 8
    frames = [frame.Method(3, spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)).marshal(),
              frame.Header(3, len(body), properties).marshal()]
    frames += [frame.Body(3, body[start:start + body_max]).marshal() for start in range(0, len(body), body_max)]
    return b"".join(frames)


def publish(routing_key: str = "jobs", frame_max: int = FRAME_MAX) -> Publish:
    return Publish(3, exchange="", routing_key=routing_key, mandatory=True, frame_max=frame_max)


@pytest.mark.parametrize(("row", "upload_id", "row_number"), [
    ({"id": "1", "name": "Ann"}, "u1", 1),
    ({"city": "São Paulo", "note": "日本語, \"quoted\""}, "ü" * 40, 2**31 - 1),
    ({"id": ""}, "a" * 32, 2**31),
    ({}, "x", 123_456_789_012),
])
def test_a_row_encodes_as_pika_encodes_it(row: dict[str, str], upload_id: str, row_number: int) -> None:
    body, properties = message.encode(row, upload_id=upload_id, row_number=row_number, line=row_number + 1)
    assert publish().message(body, properties) == pika_frames(body, properties)


@pytest.mark.parametrize("size", [0, 1, 1_000 - 8, 1_000 - 7, 5_000])
def test_a_body_is_split_at_the_frame_size(size: int) -> None:
    body, properties = b"x" * size, pika.BasicProperties(delivery_mode=2, headers={"row": -5, "big": -2**40})
    assert publish(frame_max=1_000).message(body, properties) == pika_frames(body, properties, frame_max=1_000)


def test_a_failed_row_s_copies_encode_as_pika_encodes_them() -> None:
    body, properties = message.encode({"id": "1"}, upload_id="u1", row_number=3, line=4)
    retry = message.retry_properties(properties, attempt=2, delay_s=1.5)
    dead = message.dead_properties(properties, error="ValueError: boom ü", dropped=0)
    for copy in (retry, dead):
        assert publish("q.retry").message(body, copy) == pika_frames(body, copy, routing_key="q.retry")
    assert retry.expiration == "1500"


def test_the_routing_key_and_other_properties() -> None:
    body, properties = b"{}", pika.BasicProperties(content_type="text/csv", message_id="m")
    assert publish("a.queue-ü").message(body, properties) == pika_frames(body, properties, routing_key="a.queue-ü")


@pytest.mark.parametrize(("properties", "named"), [
    (pika.BasicProperties(priority=3), "priority"),
    (pika.BasicProperties(headers={"ok": True}), "bool"),
    (pika.BasicProperties(message_id="m" * 256), "short string"),
])
def test_what_it_cannot_encode_is_refused(properties: pika.BasicProperties, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        publish().message(b"{}", properties)


def deliver(**fields: object) -> bytes:
    return frame.Method(2, spec.Basic.Deliver(**{"consumer_tag": "ctag1.abc", "delivery_tag": 7, "redelivered": False,
                                                 "exchange": "", "routing_key": "jobs", **fields})).marshal()


def header(properties: pika.BasicProperties, size: int = 42) -> bytes:
    return frame.Header(2, size, properties).marshal()


def row_properties(**headers: object) -> pika.BasicProperties:
    _, properties = message.encode({"id": "1"}, upload_id="u1", row_number=3, line=4)
    properties.headers |= headers
    return properties


OURS = {b"ctag1.abc"}


def truncated_table() -> bytes:
    data = bytearray(delivery(b"{}", row_properties()))
    table_at = len(deliver()) + 7 + 14 + 1 + len(message.CONTENT_TYPE)  # frame start, class to flags, content type
    data[table_at:table_at + 4] = (10_000).to_bytes(4, "big")  # the table claims more than the frame holds
    return bytes(data)


def delivery(body: bytes, properties: pika.BasicProperties, *, frame_max: int = FRAME_MAX,
             **fields: object) -> bytes:
    """The frames the broker sends for one message to a consumer on channel 2."""
    body_max = frame_max - 8
    bodies = [frame.Body(2, body[start:start + body_max]).marshal() for start in range(0, len(body), body_max)]
    return b"".join([deliver(**fields), header(properties, size=len(body)), *bodies])


def as_pika_reads(data: bytes) -> Delivery:
    """The message in `data`, read frame by frame with pika's own decoder."""
    frames = []
    while data:
        consumed, read = pika_decode_frame(data)
        frames.append(read)
        data = data[consumed:]
    method, head, *bodies = frames
    return Delivery(method.method.delivery_tag, head.properties, b"".join(b.fragment for b in bodies),
                    method.method.redelivered)


@pytest.mark.parametrize(("body", "properties", "frame_max", "fields"), [
    pytest.param(*message.encode({"id": "1", "name": "Ann"}, upload_id="u1", row_number=3, line=4), FRAME_MAX, {},
                 id="a-row"),
    pytest.param(*message.encode({"note": "日本語"}, upload_id="ü" * 40, row_number=2**40, line=2), FRAME_MAX,
                 {"redelivered": True, "delivery_tag": 2**40}, id="redelivered"),
    pytest.param(b"x" * 5_000, row_properties(attempt=2, ok=True), 1_000, {}, id="split-body"),
    pytest.param(b"{}", row_properties(**{"x-delivery-count": 3, "attempt": 2, "error": "boom ü", "ok": False,
                                          "big": 2**40, "neg": -2**40}), FRAME_MAX, {"consumer_tag": "ctag1.abc"},
                 id="a-retried-row"),
    pytest.param(b"{}", pika.BasicProperties(), FRAME_MAX, {"exchange": "ex", "routing_key": "a.b-ü"},
                 id="no-properties"),
    pytest.param(b"", pika.BasicProperties(delivery_mode=2), FRAME_MAX, {}, id="empty-body"),
])
def test_a_whole_delivery_reads_as_pika_reads_its_frames(body: bytes, properties: pika.BasicProperties,
                                                          frame_max: int, fields: dict[str, object]) -> None:
    data = delivery(body, properties, frame_max=frame_max, **fields)
    before = frame.Heartbeat().marshal()
    end, ours = read_delivery(before + data + deliver(), len(before), 2, OURS)
    theirs = as_pika_reads(data)
    assert end == len(before) + len(data)
    assert (ours.tag, ours.body, ours.redelivered) == (theirs.tag, theirs.body, theirs.redelivered)
    assert {**dict.fromkeys(vars(pika.BasicProperties())), **ours.properties._asdict()} == vars(theirs.properties)


def test_a_delivery_cut_anywhere_waits_for_more() -> None:
    data = delivery(b"x" * 2_500, row_properties(), frame_max=1_000)
    assert [cut for cut in range(len(data)) if read_delivery(data[:cut], 0, 2, OURS) is not False] == []


@pytest.mark.parametrize("data", [
    pytest.param(delivery(b"{}", row_properties(), consumer_tag="ctag9.other"), id="another-consumer"),
    pytest.param(delivery(b"{}", row_properties()).replace(b"\x00\x02", b"\x00\x05", 1), id="another-channel"),
    pytest.param(delivery(b"{}", row_properties(**{"x-death": [{"count": 1}]})), id="x-death"),
    pytest.param(delivery(b"{}", pika.BasicProperties(priority=1)), id="other-properties"),
    pytest.param(delivery(b"{}", row_properties()).replace(b"\x02u1", b"\x02\xff1"), id="not-utf8"),
    pytest.param(delivery(b"{}", pika.BasicProperties(headers={"d": decimal.Decimal("1.5")})), id="a-decimal"),
    pytest.param(truncated_table(), id="a-table-longer-than-its-frame"),
    pytest.param(truncated_table() + frame.Heartbeat().marshal() * 2_000, id="a-table-longer-than-its-frame-not-data"),
    pytest.param(deliver().replace(b"\x09ctag1.abc", b"\xc8ctag1.abc") + deliver(), id="a-tag-longer-than-its-frame"),
    pytest.param(deliver()[:-1] + b"\x00" + header(row_properties(), size=0), id="bad-frame-end"),
    pytest.param(frame.Method(2, spec.Basic.Ack(delivery_tag=5, multiple=True)).marshal() + deliver(), id="ack"),
    pytest.param(frame.Method(2, spec.Basic.ConsumeOk("ctag1.abc")).marshal(), id="a-reply-ending-the-data"),
    pytest.param(frame.Heartbeat().marshal(), id="a-heartbeat-ending-the-data"),
    pytest.param(header(row_properties(), size=0) + deliver(), id="a-header-first"),
    pytest.param(deliver() + frame.Body(2, b"{}").marshal() + header(row_properties(), size=2), id="no-header"),
    pytest.param(deliver() + header(row_properties(), size=2) + frame.Body(2, b"{}x").marshal(), id="body-too-long"),
])
def test_anything_else_is_left_to_pika(data: bytes) -> None:
    """Whether it is another frame, a message pika must read, or malformed: pika reads it, or says what is wrong."""
    assert read_delivery(data, 0, 2, OURS) is None
