"""kubejob.frames builds the very bytes pika sends for a basic.publish, and reads frames as pika does."""

import decimal
import struct

import pika
import pytest
from pika import frame, spec
from pika.exceptions import InvalidFieldTypeException, InvalidFrameError

from kubejob import message
from kubejob.frames import Publish, decode_frame

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


def as_pika_decodes(data: bytes) -> None:
    ours, theirs = decode_frame(data), pika_decode_frame(data)
    assert ours[0] == theirs[0]
    assert type(ours[1]) is type(theirs[1])
    assert vars(ours[1]).keys() == vars(theirs[1]).keys()
    for name, value in vars(theirs[1]).items():
        mine = getattr(ours[1], name)
        assert (vars(mine) if hasattr(value, "__dict__") else mine) == (vars(value) if hasattr(value, "__dict__")
                                                                         else value), name


@pytest.mark.parametrize("data", [
    pytest.param(deliver(), id="deliver"),
    pytest.param(deliver(redelivered=True, delivery_tag=2**40, consumer_tag="ctag-ü", routing_key="a.b"),
                 id="deliver-redelivered"),
    pytest.param(header(row_properties()), id="a-row"),
    pytest.param(header(row_properties(**{"x-delivery-count": 3, "attempt": 2, "error": "boom ü", "ok": True,
                                          "big": 2**40, "neg": -2**40})), id="a-retried-row"),
    pytest.param(frame.Body(2, b'{"id":"1"}').marshal(), id="body"),
    pytest.param(frame.Body(2, b"").marshal(), id="empty-body"),
])
def test_a_delivery_reads_as_pika_reads_it(data: bytes) -> None:
    as_pika_decodes(data)
    as_pika_decodes(data + deliver())  # one frame at a time


@pytest.mark.parametrize("data", [
    pytest.param(header(row_properties(**{"x-death": [{"count": 1, "queue": "jobs.retry"}]})), id="x-death"),
    pytest.param(header(pika.BasicProperties(priority=1, expiration="100")), id="other-properties"),
    pytest.param(header(pika.BasicProperties(headers={"d": decimal.Decimal("1.5")})), id="a-decimal"),
    pytest.param(frame.Method(2, spec.Basic.Ack(delivery_tag=5, multiple=True)).marshal(), id="ack"),
    pytest.param(frame.Method(0, spec.Connection.Close(320, "CONNECTION_FORCED", 0, 0)).marshal(), id="close"),
    pytest.param(frame.Heartbeat().marshal(), id="heartbeat"),
    pytest.param(frame.ProtocolHeader().marshal(), id="protocol-header"),
    pytest.param(header(row_properties(), size=2**40), id="large-body"),
])
def test_other_frames_are_pikas_to_read(data: bytes) -> None:
    as_pika_decodes(data)


@pytest.mark.parametrize("cut", [1, 6, 7, 20, -1])
def test_an_incomplete_frame_waits_for_more(cut: int) -> None:
    assert decode_frame(deliver()[:cut]) == (0, None)


def test_a_bad_frame_end_is_pikas_error() -> None:
    with pytest.raises(InvalidFrameError):
        decode_frame(deliver()[:-1] + b"\x00")


def test_a_truncated_table_is_pikas_to_report() -> None:
    data = bytearray(header(row_properties()))
    table_at = 7 + 14 + 1 + len(message.CONTENT_TYPE)  # frame start, class to flags, the content type
    data[table_at:table_at + 4] = (10_000).to_bytes(4, "big")  # the table claims more than the frame holds
    with pytest.raises(InvalidFieldTypeException):
        pika_decode_frame(bytes(data))
    with pytest.raises(InvalidFieldTypeException):  # not the next frame's bytes read as the table's
        decode_frame(bytes(data) + deliver())


def test_a_truncated_delivery_is_pikas_to_report() -> None:
    data = bytearray(deliver())
    data[11] = 200  # the consumer tag claims more than the frame holds
    with pytest.raises(struct.error):
        pika_decode_frame(bytes(data))
    with pytest.raises(struct.error):
        decode_frame(bytes(data) + deliver())
