"""Fewer, larger socket writes for pika: one send() for many frames instead of one per frame.

pika 1.3.2 buffers every frame it is given as a chunk of its own and sends the chunks one
`send()` each: three per message (method, header, body). On loopback a send costs about as
much as encoding the message, and the broker then reads one small segment per frame. Joining
the chunks that are waiting when the socket turns writable, up to CHUNK_BYTES each, made the
producer's upload about 1.25 times as fast (`python -m bench ingest`, alternating runs: about
14k against 18k rows/s). The bytes and their order are unchanged. This reaches into pika's
transport (`_AsyncTransportBase._produce`), hence the pinned version in kubejob/requirements.txt
and tests/integration/test_upload.py counting the sends.
"""

import collections
from collections.abc import Iterable, Iterator

from pika.adapters.utils import io_services_utils

# Large enough that a send carries a few hundred rows; small enough that the rest of a partly
# sent chunk, which pika copies, stays cheap.
CHUNK_BYTES = 64 * 1024


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


_send_each = io_services_utils._AsyncTransportBase._produce


def _send_joined(transport: io_services_utils._AsyncTransportBase) -> None:
    buffers: collections.deque[bytes] = transport._tx_buffers
    if len(buffers) > 1:
        chunks = list(joined(buffers))
        buffers.clear()
        buffers.extend(chunks)
    _send_each(transport)


def install() -> None:
    """Make every pika connection in this process join its waiting frames before sending them."""
    io_services_utils._AsyncTransportBase._produce = _send_joined
