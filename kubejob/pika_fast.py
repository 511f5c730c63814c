"""The one module that reaches into pika's private parts, where its public calls cost the services most.

- `join_writes(connection)`: the connection's socket gets many frames per send() instead of
  one per frame (pika 1.3.2 queues each frame as a chunk and sends them one by one);
- `send_frames(connection, data)`: frames built by kubejob.frames go to pika's output as they
  are, instead of through Channel.basic_publish's marshalling.

Each is applied to one connection the service owns, never patched into pika's classes. They
are on only for the pika versions listed in TESTED_VERSIONS and while KUBEJOB_PIKA_FAST is on
(`active`); otherwise the services use pika's public calls, and `active` logs one WARNING
saying so. HOOKS names every private part used; tests/unit/test_pika_fast.py checks that each
is there, of the kind expected, in the pika installed.
"""

import functools
import logging
from collections.abc import Iterable, Iterator

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.adapters.utils import io_services_utils
from pika.connection import Connection

log = logging.getLogger(__name__)

TESTED_VERSIONS = frozenset({"1.3.2"})

# (owner, attribute, what it must be): every private part of pika used below.
HOOKS = (
    (Connection, "_output_marshaled_frames", "method"),
    (BaseConnection, "_transport", "instance attribute"),  # the connection's transport once connected
    (io_services_utils._AsyncTransportBase, "_produce", "method"),
    (io_services_utils._AsyncTransportBase, "_tx_buffers", "instance attribute"),  # a deque of chunks to send
    (io_services_utils, "_AsyncPlaintextTransport", "class"),
)

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
