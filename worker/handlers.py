"""Row handlers. WORKER_HANDLER=module:function picks one; it gets the row and returns nothing."""

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from kubejob.errors import Permanent

log = logging.getLogger(__name__)

# An ordinary function, or an `async def` one, run on an event loop (see worker.rows).
Handler = Callable[[dict[str, str]], None | Awaitable[None]]


def checksum_row(row: dict[str, str]) -> None:
    """The default work: a SHA-256 of the row's canonical JSON, logged with its field count."""
    digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
    log.debug("row processed", extra={"fields": len(row), "sha256": digest})


def noop(row: dict[str, str]) -> None:
    """Does nothing: for measuring the queue machinery alone."""


WAIT_20MS_S = 0.020


def wait_20ms(row: dict[str, str]) -> None:
    """Waits 20 ms, as a handler calling another service would: for measuring WORKER_CONCURRENCY and scale-out."""
    time.sleep(WAIT_20MS_S)


class HandlerNotFound(Permanent, ValueError):
    """WORKER_HANDLER does not name a function that can be imported."""


def load(spec: str) -> Handler:
    """Import `module:function`; fails at start, not at the first row."""
    module_name, _, function_name = spec.partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise HandlerNotFound(f"cannot import {spec!r}: {exc}") from exc
    if not callable(handler):
        raise HandlerNotFound(f"{spec!r} is not callable")
    return handler
