"""producer.frames builds the very bytes pika would send for a basic.publish."""

import pika
import pytest
from pika import frame, spec

from kubejob import message
from producer.frames import Publish

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
