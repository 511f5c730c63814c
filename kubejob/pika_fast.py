"""The one module that reaches into pika's private parts, where its public calls cost the services most.

For the producer (an AsyncioConnection):
- `join_writes(connection)`: the connection's socket gets many frames per send() instead of
  one per frame (pika 1.3.2 queues each frame as a chunk and sends them one by one);
- `send_frames(connection, data)`: frames built by kubejob.frames go to pika's output as they
  are, instead of through Channel.basic_publish's marshalling.

For the worker (a BlockingConnection):
- `read_received(connection, on_data)`: the bytes the connection receives, up to RECV_BYTES at
  a time, go to `on_data` instead of pika's frame-at-a-time decoding; it returns `Received`,
  through which they are counted, handed back to pika frame by frame, or dispatched as one
  event of the channel's, in order with pika's own;
- `async_channel(channel)` and `wait(channel, done)`: the pika Channel under a BlockingChannel,
  to publish many messages before waiting for their confirms (BlockingChannel.basic_publish
  waits for each), and a wait for a condition while pika's I/O runs.

Each is applied to one connection the service owns, never patched into pika's classes. They
are on only for the pika versions listed in TESTED_VERSIONS and while KUBEJOB_PIKA_FAST is on
(`active`); otherwise the services use pika's public calls, and `active` logs one WARNING
saying so. HOOKS names every private part used; tests/unit/test_pika_fast.py checks that each
is there, of the kind expected, in the pika installed.
"""

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils import io_services_utils
from pika.connection import Connection

log = logging.getLogger(__name__)

TESTED_VERSIONS = frozenset({"1.3.2"})

# (owner, attribute, what it must be, where it is set for an instance attribute): every private part of pika used.
HOOKS = (
    (Connection, "_output_marshaled_frames", "method", ""),
    (Connection, "_on_data_available", "method", ""),
    (Connection, "_frame_buffer", "instance attribute", "_init_connection_state"),  # bytes received, not decoded
    (Connection, "_body_max_length", "instance attribute", "__init__"),  # a body frame's largest payload
    (BaseConnection, "_transport", "instance attribute", "__init__"),  # the connection's transport once connected
    (io_services_utils._AsyncTransportBase, "_produce", "method", ""),
    (io_services_utils._AsyncTransportBase, "_tx_buffers", "instance attribute", "__init__"),  # chunks to send
    (io_services_utils._AsyncTransportBase, "_MAX_RECV_BYTES", "class attribute", ""),
    (io_services_utils, "_AsyncPlaintextTransport", "class", ""),
    (BlockingConnection, "_impl", "instance attribute", "__init__"),
    (BlockingChannel, "_impl", "instance attribute", "__init__"),
    (BlockingChannel, "_add_pending_event", "method", ""),
    (BlockingChannel, "_flush_output", "method", ""),
)
# The public `bytes_received` of a Connection is what its heartbeat checker watches; kept up here too.
RECV_BYTES = 256 * 1024  # about 1,000 rows per receive, instead of pika's 4 KiB

# Large enough that a send carries a few hundred rows; small enough that the rest of a partly
# sent chunk, which pika copies, stays cheap.
CHUNK_BYTES = 64 * 1024


def active(wanted: bool) -> bool:
    """Whether to use the fast paths: `wanted` (KUBEJOB_PIKA_FAST) and a pika version they were tested with."""
    if not wanted:
        _plain("KUBEJOB_PIKA_FAST is off")
        return False
    if pika.__version__ not in TESTED_VERSIONS:
        _plain(f"pika {pika.__version__} is not a version they were tested with ({', '.join(sorted(TESTED_VERSIONS))})")
        return False
    return True


@functools.cache
def _plain(reason: str) -> None:
    log.warning("pika's fast paths are off: publishing and consuming through pika's public calls",
                extra={"reason": reason, "pika": pika.__version__})


def join_writes(connection: AsyncioConnection) -> bool:
    """Have the connection send its waiting frames in chunks of up to CHUNK_BYTES; whether it could.

    Only a plain TCP transport is joined: the TLS one sends through its own `_produce`.
    """
    transport = connection._transport
    if type(transport) is not io_services_utils._AsyncPlaintextTransport:
        return False
    transport._produce = functools.partial(_send_joined, transport)
    return True


def send_frames(connection: Connection, data: bytes) -> None:
    """Queue bytes that are whole AMQP frames for sending, counted as pika counts what it sends."""
    connection._output_marshaled_frames([data])


def joined(chunks: Iterable[bytes], limit: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`chunks` in order, consecutive ones joined while they stay within `limit` bytes (a larger one stays whole)."""
    group: list[bytes] = []
    size = 0
    for chunk in chunks:
        if group and size + len(chunk) > limit:
            yield b"".join(group)
            group, size = [], 0
        group.append(chunk)
        size += len(chunk)
    if group:
        yield b"".join(group)


def _send_joined(transport: io_services_utils._AsyncTransportBase) -> None:
    buffers = transport._tx_buffers
    if len(buffers) > 1:
        chunks = list(joined(buffers))
        buffers.clear()
        buffers.extend(chunks)
    io_services_utils._AsyncTransportBase._produce(transport)


class Event(Protocol):
    """What a BlockingChannel dispatches, in order, from process_data_events."""

    def dispatch(self) -> None: ...


class Received:
    """A BlockingConnection whose received bytes go to our code; what pika must still see goes back to it."""

    def __init__(self, connection: BlockingConnection, on_data: Callable[[bytes], None]) -> None:
        impl = connection._impl
        self._impl = impl
        self._pika_data_available = impl._on_data_available
        self.leftover, impl._frame_buffer = impl._frame_buffer, b""  # what pika had received and not decoded
        self.body_max = impl._body_max_length
        impl._on_data_available = on_data
        impl._transport._MAX_RECV_BYTES = RECV_BYTES

    def count(self, size: int) -> None:
        """`size` bytes were received (pika's heartbeat checker sees the connection is alive)."""
        self._impl.bytes_received += size

    def to_pika(self, frame: bytes) -> None:
        """One whole frame for pika's own decoding (which counts its bytes itself)."""
        self._impl.bytes_received -= len(frame)
        self._pika_data_available(frame)


def read_received(connection: BlockingConnection, on_data: Callable[[bytes], None]) -> Received:
    return Received(connection, on_data)


def dispatch(channel: BlockingChannel, event: Event) -> None:
    """Have the channel dispatch `event` after what it has queued, as it does its own."""
    channel._add_pending_event(event)


def async_channel(channel: BlockingChannel) -> pika.channel.Channel:
    return channel._impl


def wait(channel: BlockingChannel, done: Callable[[], bool]) -> None:
    """Run the connection's I/O until `done()`; raises what pika raises if the channel or connection closes."""
    channel._flush_output(done)
