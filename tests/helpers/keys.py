"""`python -m producer.keys` as a child process, as an operator runs it, against DATABASE_URL."""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.ledger import as_database_url, fresh_database


@pytest.fixture(scope="module")
def keys_ledger() -> Iterator[str]:
    """A ledger of the module's own, as DATABASE_URL: the tenants and keys one module makes meet no other's."""
    with fresh_database() as url, as_database_url(url):
        yield url


def keys(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the keys command with `args`; its exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "producer.keys", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60, check=check)


def create_key(tenant: str, *scopes: str, expires_in_days: float | None = None) -> str:
    """A new API key of `tenant` with `scopes`: the last line `create` prints."""
    expiry = ["--expires-in", str(expires_in_days)] if expires_in_days is not None else []
    made = keys("create", "--tenant", tenant, *(arg for scope in scopes for arg in ("--scope", scope)), *expiry)
    return made.stdout.splitlines()[-1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
