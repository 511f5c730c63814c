"""Holding back new Jobs while recent ones fail or get stuck and the queue does not shrink.

A Job that fails (a crash loop up to backoffLimit, its activeDeadlineSeconds, exit code 2) is
finished, so the decision alone would replace it at the next poll, and the next one fails the
same way: a new failing Job every poll, without end. Here each failed or stuck Job lengthens
the wait before the next one, doubling from `first_s` up to `cap_s`; a Job that completes or
a queue that shrinks below where it stood when the streak began shows that Jobs work again,
and ends the wait. Pure: the caller passes the time and what it read.
"""

import math

from kubejob.backoff import doubling
from scaler.decide import Decision


class JobBackoff:
    """The streak of failed or stuck Jobs and the wait it imposes on creating more."""

    def __init__(self, *, first_s: float, cap_s: float) -> None:
        self._first_s, self._cap_s = first_s, cap_s
        self._bad: set[str] = set()  # failed or stuck Jobs already counted, by uid
        self._completed: set[str] = set()
        self.streak = 0
        self._depth_at_start: int | None = None
        self._grew_at = 0.0

    def observe(self, *, now: float, depth: int, bad: frozenset[str], completed: frozenset[str]) -> bool:
        """Take in one poll's reading (uids of failed or stuck Jobs, of completed ones); True if the streak grew."""
        fresh_completed, self._completed = completed - self._completed, set(completed)
        if fresh_completed or (self._depth_at_start is not None and depth < self._depth_at_start):
            self.streak, self._depth_at_start = 0, None
        # Only uids still listed are kept: a Job its TTL removed can never come back.
        fresh, self._bad = bad - self._bad, set(bad)
        if not fresh:
            return False
        if self.streak == 0:
            self._depth_at_start = depth
        self.streak += len(fresh)
        self._grew_at = now
        return True

    def wait_s(self, now: float) -> float:
        """Seconds until the next Job may be created (0: now)."""
        if self.streak == 0:
            return 0.0
        return max(0.0, self._grew_at + delay_s(self.streak, first_s=self._first_s, cap_s=self._cap_s) - now)

    def hold(self, decision: Decision, *, now: float) -> Decision:
        """`decision`, or creating nothing while the wait lasts, saying why."""
        wait = self.wait_s(now)
        if decision.create == 0 or wait == 0:
            return decision
        return Decision(0, f"backing off: {self.streak} recent Jobs failed or stuck, queue not shrinking, "
                           f"next Job in {math.ceil(wait)} s", "backing_off")


def delay_s(streak: int, *, first_s: float, cap_s: float) -> float:
    """The wait after `streak` failed or stuck Jobs in a row: `first_s`, doubling, at most `cap_s`."""
    return doubling(first_s, streak - 1, cap_s=cap_s)
