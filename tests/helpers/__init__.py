"""What the tests and the benchmarks share; fixtures built on these live in tests/conftest.py."""

import pathlib
import sys
import time

import httpx
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "infra" / "local-cluster"))  # the launcher is a package there

# One free_port, shared with the launcher; die_with_parent(argv), so that a run killed outright (SIGKILL, or
# SIGTERM, which skips the `finally` that would stop them) leaves no service process behind.
from localcluster.processes import die_with_parent, free_port  # noqa: E402, F401


def wait_for(predicate, *, what: str, timeout: float = 60.0, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


def answers(url: str) -> bool:
    """True when `url` answers 200 now (a service's health endpoint while it starts)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
