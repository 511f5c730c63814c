"""Databases of the tests' own in the local PostgreSQL, one per run or per module."""

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from kubejob import ledger as schema

LEDGER_ADMIN_URL = os.environ.get("LEDGER_ADMIN_URL", "postgresql://kubejob:kubejob@localhost:5432/kubejob")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database (make postgres), dropped after; yields its URL."""
    name = f"kubejob_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(LEDGER_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {LEDGER_ADMIN_URL} (make postgres): {exc}", pytrace=False)
    try:
        yield LEDGER_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(LEDGER_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def as_database_url(url: str) -> Iterator[str]:
    """DATABASE_URL set to `url` meanwhile, for Settings() here and every service a test starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        yield url


def record_upload(upload_id: str, *, queue: str, rows: int, tenant: str = "default") -> None:
    """Record in the ledger that DATABASE_URL names an upload whose `rows` are all published into `queue`, as
    the producer does before a worker serves it (its queue is declared right after: a worker declares it too)."""
    url = os.environ["DATABASE_URL"]
    schema.migrate(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("""INSERT INTO uploads (id, tenant, file_name, columns, queue, rows, confirmed, published_at)
                        VALUES (%s, %s, 'published by a test', '{id}', %s, %s, %s, now())""",
                     (upload_id, tenant, queue, rows, rows))


def upload_counts(upload_id: str) -> tuple[int, int]:
    """The upload's `done` and `failed` in the ledger DATABASE_URL names."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT done, failed FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    assert found is not None, f"no upload {upload_id} in the ledger"
    return found[0], found[1]

