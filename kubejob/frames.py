"""The AMQP 0-9-1 frames of a message, built and read with struct instead of pika's generic code.

pika encodes and decodes every field through its generic table code. Per row that was about
11 µs of the producer's time to build a basic.publish (the largest single cost of an upload)
and 13 µs of the worker's to read a delivery's three frames. Here they take about 4 and 9
(tests/unit/test_frames.py holds both to pika's own bytes and objects), for the properties
and header values the message contract and the broker use:
- `Publish` refuses anything else rather than send it wrong;
- `decode_frame` hands anything else (other methods, a retried row's x-death header) to pika.
"""

import functools
import operator
import struct

import pika
import pika.frame
from pika import spec

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
FRAME_OVERHEAD = 8  # type, channel, size (7 bytes) and the end octet
BASIC_CLASS, PUBLISH_METHOD, DELIVER_METHOD = 60, 40, 60
# Property flags, in the order their values follow (AMQP 0-9-1 basic properties).
CONTENT_TYPE, HEADERS, DELIVERY_MODE, MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080
ENCODED = ("content_type", "headers", "delivery_mode", "message_id")
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
_pika_decode_frame = pika.frame.decode_frame


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


def decode_frame(data: bytes) -> tuple[int, pika.frame.Frame | None]:
    """pika.frame.decode_frame: (bytes consumed, the first frame in `data`), or (0, None) while it is incomplete."""
    if len(data) < 7 or data[0] not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY):
        return _pika_decode_frame(data)
    kind, channel, size = _frame_start.unpack_from(data)
    end = size + FRAME_OVERHEAD
    if end > len(data):
        return 0, None
    if data[end - 1] != FRAME_END[0]:
        return _pika_decode_frame(data)  # raises InvalidFrameError
    if kind == FRAME_BODY:
        return end, pika.frame.Body(channel, data[7:end - 1])
    try:
        if kind == FRAME_METHOD and data[7:11] == _deliver_start:
            return end, pika.frame.Method(channel, _deliver(data[7:end - 1]))
        if kind == FRAME_HEADER and (header := _properties(data[7:end - 1])) is not None:
            return end, pika.frame.Header(channel, *header)
    except (struct.error, IndexError):
        pass  # malformed: pika says how
    return _pika_decode_frame(data)


def install_decoder() -> None:
    """Make every pika connection in this process read frames with decode_frame."""
    pika.frame.decode_frame = decode_frame


def _deliver(data: bytes) -> spec.Basic.Deliver:
    """The Basic.Deliver in a method frame's payload."""
    consumer_tag, offset = _short_at(data, len(_deliver_start))
    delivery_tag = _uint64.unpack_from(data, offset)[0]
    redelivered = bool(data[offset + 8] & 1)
    exchange, offset = _short_at(data, offset + 9)
    routing_key, _ = _short_at(data, offset)
    return spec.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)


def _properties(data: bytes) -> tuple[int, pika.BasicProperties] | None:
    """(body size, properties) of a content header's payload; None if it uses anything left to pika."""
    class_id, _weight, size, flags = _header_start.unpack_from(data)
    if class_id != BASIC_CLASS or flags & ~DECODED:
        return None
    offset, content_type, headers, delivery_mode, message_id = _header_start.size, None, None, None, None
    if flags & CONTENT_TYPE:
        content_type, offset = _short_at(data, offset)
    if flags & HEADERS:
        headers, offset = _table(data, offset)
        if headers is None:
            return None
    if flags & DELIVERY_MODE:
        delivery_mode, offset = data[offset], offset + 1
    if flags & MESSAGE_ID:
        message_id, offset = _short_at(data, offset)
    return size, pika.BasicProperties(content_type=content_type, headers=headers, delivery_mode=delivery_mode,
                                      message_id=message_id)


def _table(data: bytes, offset: int) -> tuple[dict[str | bytes, object] | None, int]:
    """A table of strings, integers and booleans as pika decodes it; None if it holds another type."""
    size = _long.unpack_from(data, offset)[0]
    offset += 4
    limit = offset + size
    if limit > len(data):
        raise IndexError("the table runs past the frame")
    table: dict[str | bytes, object] = {}
    while offset < limit:
        key, offset = _short_at(data, offset)
        kind, offset = data[offset], offset + 1
        value: object
        if kind == 0x53:  # S
            length = _long.unpack_from(data, offset)[0]
            value, offset = _text(data[offset + 4:offset + 4 + length]), offset + 4 + length
        elif kind == 0x49:  # I
            value, offset = _int32.unpack_from(data, offset)[0], offset + 4
        elif kind == 0x6C:  # l
            value, offset = _uint64.unpack_from(data, offset)[0], offset + 8
        elif kind == 0x4C:  # L
            value, offset = _int64.unpack_from(data, offset)[0], offset + 8
        elif kind == 0x74:  # t
            value, offset = bool(data[offset]), offset + 1
        else:
            return None, offset
        table[key] = value
    return table, offset


def _short_at(data: bytes, offset: int) -> tuple[str | bytes, int]:
    end = offset + 1 + data[offset]
    return _text(data[offset + 1:end]), end


def _text(raw: bytes) -> str | bytes:
    """UTF-8 text, or the bytes when they are not: as pika decodes strings."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw
