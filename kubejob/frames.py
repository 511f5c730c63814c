"""The AMQP 0-9-1 frames of a message, built and read with struct instead of pika's generic code.

pika encodes and decodes every field through its generic table code, which made building a
basic.publish the largest single cost of the producer's time per row, and reading a
delivery's three frames a large part of the worker's. Here both take a fraction of that
(tests/unit/test_frames.py holds both to pika's own bytes and objects), for the properties
and header values the message contract (kubejob.message) and the broker use:
- `Publish` refuses anything else rather than send it wrong;
- `read_delivery` leaves anything else (other frames, a retried row's x-death header) to pika.
"""

import functools
import operator
import struct
from collections.abc import Container
from typing import Any, Literal, NamedTuple

import pika
import pika.frame

from kubejob.message import AnyProperties, Delivery, Properties

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
FRAME_OVERHEAD = 8  # type, channel, size (7 bytes) and the end octet
BASIC_CLASS, PUBLISH_METHOD, DELIVER_METHOD = 60, 40, 60
# Property flags, in the order their values follow (AMQP 0-9-1 basic properties).
CONTENT_TYPE, HEADERS, DELIVERY_MODE, EXPIRATION, MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0100, 0x0080
# Read by `read_delivery`, and encoded by `Publish`, which also encodes a retry's expiration.
ENCODED = (*Properties._fields, "expiration")
# Every other property pika knows, read from pika itself so that one it adds is refused too.
NOT_ENCODED = tuple(name for name in vars(pika.BasicProperties()) if name not in ENCODED)
_not_encoded = operator.attrgetter(*NOT_ENCODED)
_NONE = (None,) * len(NOT_ENCODED)
DECODED = CONTENT_TYPE | HEADERS | DELIVERY_MODE | MESSAGE_ID

_frame_start = struct.Struct(">BHI")
_header_start = struct.Struct(">HHQH")
_long = struct.Struct(">I")
_int32 = struct.Struct(">i")
_int64 = struct.Struct(">q")
_uint64 = struct.Struct(">Q")
_deliver_start = struct.pack(">HH", BASIC_CLASS, DELIVER_METHOD)


class Publish:
    """basic.publish frames for one channel, exchange and routing key."""

    def __init__(self, channel_number: int, *, exchange: str, routing_key: str, mandatory: bool,
                 frame_max: int) -> None:
        arguments = struct.pack(">HHH", BASIC_CLASS, PUBLISH_METHOD, 0) + _short(exchange) + _short(routing_key)
        self._method = _frame(FRAME_METHOD, channel_number, arguments + bytes((int(mandatory),)))
        self._channel = channel_number
        self._body_max = frame_max - FRAME_OVERHEAD

    def message(self, body: bytes, properties: pika.BasicProperties) -> bytes:
        """The method, header and body frames of one message, as one string of bytes."""
        header = _frame(FRAME_HEADER, self._channel, _content_header(len(body), properties))
        if len(body) <= self._body_max:  # nearly every row: no slicing the body
            return b"".join((self._method, header, _frame(FRAME_BODY, self._channel, body) if body else b""))
        parts = [self._method, header]
        for start in range(0, len(body), self._body_max):
            parts.append(_frame(FRAME_BODY, self._channel, body[start:start + self._body_max]))
        return b"".join(parts)


def _content_header(size: int, properties: pika.BasicProperties) -> bytes:
    if _not_encoded(properties) != _NONE:
        named = [name for name, value in zip(NOT_ENCODED, _not_encoded(properties), strict=True) if value is not None]
        raise ValueError(f"kubejob.frames does not encode the properties {', '.join(named)}")
    flags, values = 0, []
    if properties.content_type is not None:
        flags |= CONTENT_TYPE
        values.append(_name(properties.content_type))
    if properties.headers is not None:
        flags |= HEADERS
        table = b"".join([_name(key) + _value(value) for key, value in properties.headers.items()])
        values.append(_long.pack(len(table)) + table)
    if properties.delivery_mode is not None:
        flags |= DELIVERY_MODE
        values.append(bytes((properties.delivery_mode,)))
    if properties.expiration is not None:
        flags |= EXPIRATION
        values.append(_short(properties.expiration))
    if properties.message_id is not None:
        flags |= MESSAGE_ID
        values.append(_short(properties.message_id))
    return _header_start.pack(BASIC_CLASS, 0, size, flags) + b"".join(values)


def _value(value: object) -> bytes:
    """A header value as pika encodes it: strings as 'S', integers as 'I' when they fit 32 bits."""
    if isinstance(value, str):
        encoded = value.encode()
        return b"S" + _long.pack(len(encoded)) + encoded
    if isinstance(value, int) and not isinstance(value, bool):
        if -2**31 <= value < 2**31:
            return b"I" + _int32.pack(value)
        return b"L" + _int64.pack(value) if value < 0 else b"l" + _uint64.pack(value)
    raise ValueError(f"kubejob.frames does not encode header values of type {type(value).__name__}")


@functools.lru_cache(maxsize=64)
def _name(text: str) -> bytes:
    """A short string that repeats from message to message: a header's name, the content type."""
    return _short(text)


def _short(text: str) -> bytes:
    encoded = text.encode()
    if len(encoded) > 255:
        raise ValueError(f"{text[:40]!r}... is longer than an AMQP short string (255 bytes)")
    return bytes((len(encoded),)) + encoded


def _frame(kind: int, channel_number: int, payload: bytes) -> bytes:
    return _frame_start.pack(kind, channel_number, len(payload)) + payload + FRAME_END


def _properties(data: bytes, offset: int, flags: int) -> tuple[Properties | None, int]:
    """The properties whose values start at `offset`, and where they end; None if a header uses what is left to pika.

    Raises UnicodeDecodeError for text that is not UTF-8: pika reads that message (it keeps such text as bytes).
    """
    content_type, headers, delivery_mode, message_id = None, None, None, None
    if flags & CONTENT_TYPE:
        content_type, offset = _short_at(data, offset)
    if flags & HEADERS:
        headers, offset = _table(data, offset)
        if headers is None:
            return None, offset
    if flags & DELIVERY_MODE:
        delivery_mode, offset = data[offset], offset + 1
    if flags & MESSAGE_ID:
        message_id, offset = _short_at(data, offset)
    return Properties(content_type, headers, delivery_mode, message_id), offset


def _table(data: bytes, offset: int) -> tuple[dict[str, Any] | None, int]:
    """A table of strings, integers and booleans as pika decodes it; None if it holds another type."""
    # Inline rather than through _short_at: a row's headers are read for every delivery.
    limit = offset + 4 + _long.unpack_from(data, offset)[0]
    offset += 4
    if limit > len(data):
        raise IndexError("the table runs past the data")
    table: dict[str, Any] = {}
    while offset < limit:
        end = offset + 1 + data[offset]
        key, kind, offset = data[offset + 1:end].decode(), data[end], end + 1
        if kind == 0x53:  # S
            end = offset + 4 + _long.unpack_from(data, offset)[0]
            table[key], offset = data[offset + 4:end].decode(), end
        elif kind == 0x49:  # I
            table[key], offset = _int32.unpack_from(data, offset)[0], offset + 4
        elif kind == 0x6C:  # l
            table[key], offset = _uint64.unpack_from(data, offset)[0], offset + 8
        elif kind == 0x4C:  # L
            table[key], offset = _int64.unpack_from(data, offset)[0], offset + 8
        elif kind == 0x74:  # t
            table[key], offset = bool(data[offset]), offset + 1
        else:
            return None, offset
    return table, offset


def _short_at(data: bytes, offset: int) -> tuple[str, int]:
    end = offset + 1 + data[offset]
    return data[offset + 1:end].decode(), end


class Head(NamedTuple):
    """A delivery's method and content header frames, read before its body is in."""

    tag: int
    redelivered: bool
    properties: AnyProperties
    body_size: int
    end: int  # where the header frame ends and the body frames start


def read_delivery(data: bytes, offset: int, channel_number: int,
                  consumer_tags: Container[bytes]) -> tuple[int, Delivery] | Literal[False] | None:
    """The message for one of `consumer_tags` whose frames start at `offset`: (where they end, the Delivery).

    False while its frames are incomplete; None when the frame there is another one, or one of a
    message that uses what is left to pika (pika reads those frame by frame).
    """
    head = _head(data, offset, channel_number, consumer_tags)
    if head is None or head is False:
        return head
    delivery_tag, redelivered, body_size, properties, _, end = head
    if properties is None:
        return None
    payloads = []  # where each body frame's payload starts and ends
    while body_size > 0:
        if end + 7 > len(data):
            return False
        kind, channel, size = _frame_start.unpack_from(data, end)
        if kind != FRAME_BODY or channel != channel_number or size > body_size:
            return None
        start, end = end, end + size + FRAME_OVERHEAD
        if end > len(data):
            return False
        if data[end - 1] != FRAME_END[0]:
            return None
        payloads.append((start + 7, end - 1))
        body_size -= size
    if len(payloads) == 1:  # nearly every row
        body = data[payloads[0][0]:payloads[0][1]]
    else:  # a body of several frames is copied once, not sliced and then joined
        view = memoryview(data)
        body = b"".join([view[start:stop] for start, stop in payloads])
    return end, Delivery(delivery_tag, properties, body, redelivered)


def read_head(data: bytes, offset: int, channel_number: int,
              consumer_tags: Container[bytes]) -> Head | Literal[False] | None:
    """The method and header frames of a delivery for one of `consumer_tags` at `offset`, before its body is in.

    False while they are incomplete; None when the frame there is another one. Properties that
    `read_delivery` leaves to pika are read with pika's decoder, so that the head of a message
    too large to keep can be read whatever its headers.
    """
    head = _head(data, offset, channel_number, consumer_tags)
    if head is None or head is False:
        return head
    delivery_tag, redelivered, body_size, properties, header_at, end = head
    if properties is None:
        try:
            properties = pika.frame.decode_frame(data[header_at:end])[1].properties
        except (struct.error, IndexError, ValueError):
            return None  # malformed: pika says how
    return Head(delivery_tag, redelivered, properties, body_size, end)


def delivery_end(head: Head, body_max: int) -> int:
    """Where the delivery of `head` ends, its body in frames of `body_max` bytes (frame_max less FRAME_OVERHEAD).

    RabbitMQ fills each body frame but the last; a broker sending smaller frames needs more.
    """
    return head.end + head.body_size + FRAME_OVERHEAD * -(-head.body_size // body_max)


def _head(data: bytes, offset: int, channel_number: int, consumer_tags: Container[bytes],
          ) -> tuple[int, bool, int, Properties | None, int, int] | Literal[False] | None:
    """A delivery's (tag, redelivered, body size, properties, where its header frame starts, where it ends).

    Its properties are None when they are left to pika. False while the frames are incomplete;
    None when the frame at `offset` is another one.
    """
    if len(data) - offset < 7:
        return False
    kind, channel, size = _frame_start.unpack_from(data, offset)
    if kind != FRAME_METHOD or channel != channel_number:
        return None
    end = offset + size + FRAME_OVERHEAD
    if end > len(data):
        return False
    if data[end - 1] != FRAME_END[0] or size < 5 or data[offset + 7:offset + 11] != _deliver_start:
        return None  # as soon as it is whole: a reply that ends what was received must not wait
    # The consumer tag, the delivery tag and redelivered; the exchange and routing key are not kept.
    tag_start = offset + 12
    tag_end = tag_start + data[tag_start - 1]
    if tag_end + 9 > end - 1 or data[tag_start:tag_end] not in consumer_tags:
        return None
    if end + 7 > len(data):
        return False
    delivery_tag = _uint64.unpack_from(data, tag_end)[0]
    redelivered = bool(data[tag_end + 8] & 1)
    kind, channel, size = _frame_start.unpack_from(data, end)
    if kind != FRAME_HEADER or channel != channel_number:
        return None
    header_at, start, end = end, end + 7, end + size + FRAME_OVERHEAD
    if end > len(data):
        return False
    properties = None
    try:  # in place: no copy of the header's bytes
        class_id, _weight, body_size, flags = _header_start.unpack_from(data, start)
        if data[end - 1] != FRAME_END[0] or class_id != BASIC_CLASS:
            return None
        if not flags & ~DECODED:
            properties, read_to = _properties(data, start + _header_start.size, flags)
            if properties is not None and read_to != end - 1:
                return None
    except (struct.error, IndexError):
        return None  # malformed: pika says how
    except UnicodeDecodeError:
        pass  # text that is not UTF-8: pika keeps it as bytes
    return delivery_tag, redelivered, body_size, properties, header_at, end


def read_body_frame(data: bytes, offset: int, channel_number: int) -> tuple[int, int] | Literal[False] | None:
    """The body frame on `channel_number` at `offset`: (where it ends, its payload's size); False while incomplete.

    None when the frame there is another one.
    """
    if len(data) - offset < 7:
        return False
    kind, channel, size = _frame_start.unpack_from(data, offset)
    if kind != FRAME_BODY or channel != channel_number:
        return None
    end = offset + size + FRAME_OVERHEAD
    if end > len(data):
        return False
    return (end, size) if data[end - 1] == FRAME_END[0] else None


def frame_length(data: bytes, offset: int) -> int:
    """How many bytes from `offset` the frame there takes, or at least takes while its size is not in yet."""
    if len(data) - offset < 7:
        return 7
    return _frame_start.unpack_from(data, offset)[2] + FRAME_OVERHEAD


def frame_end(data: bytes, offset: int) -> int | None:
    """Where the frame at `offset` ends, once all of it is in `data`."""
    if len(data) - offset < 7:
        return None
    end = offset + _frame_start.unpack_from(data, offset)[2] + FRAME_OVERHEAD
    return end if end <= len(data) else None
