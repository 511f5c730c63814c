"""A short-lived cache of answers by key, so that many readers of one key cost one read per interval."""

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ShortCache(Generic[T]):
    """Each key's answer, kept `seconds` from when its read began; at most `size` keys, the oldest dropped first.

    A key has one read at a time: readers who come while it runs wait for it, and a read begins
    only after the one before it ended, so a later answer is never older than an earlier one.
    """

    def __init__(self, *, seconds: float, size: int) -> None:
        self.seconds, self.size = seconds, size
        self._reads: dict[str, tuple[float, asyncio.Task[T]]] = {}  # in the order the reads began

    async def get(self, key: str, read: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The answer of the key's read if it is running or began less than `seconds` ago, else of a new one."""
        now = time.monotonic()
        began, task = self._reads.get(key, (0.0, None))
        if task is None or (task.done() and now - began >= self.seconds):
            self._reads.pop(key, None)
            if len(self._reads) >= self.size:
                del self._reads[next(iter(self._reads))]
            task = asyncio.create_task(read())
            self._reads[key] = (now, task)
        try:
            # Shielded: a reader that goes away (a closed connection) does not cancel the others' read.
            return await asyncio.shield(task)
        except Exception:
            if self._reads.get(key, (0.0, None))[1] is task:
                del self._reads[key]  # a failure is not kept: the next reader tries again
            raise

    def forget(self, key: str) -> None:
        """Drop the key's answer: the next reader reads anew."""
        self._reads.pop(key, None)
