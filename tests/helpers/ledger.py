"""Databases of the tests' own in the local PostgreSQL, one per run or per module."""

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import psycopg
import pytest

from kubejob import ledger as schema
from kubejob import message

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


class Recorded(NamedTuple):
    """An upload to record: its id, the queue its rows are published into, how many, and its tenant."""

    id: str
    queue: str
    rows: int
    tenant: str = "default"


def record_upload(upload_id: str, *, queue: str, rows: int, tenant: str = "default") -> None:
    """Record in the ledger that DATABASE_URL names an upload whose `rows` are all published into `queue`, as
    the producer does before a worker serves it (its queue is declared right after: a worker declares it too)."""
    record_uploads([Recorded(upload_id, queue, rows, tenant)])


def record_uploads(uploads: Sequence[Recorded]) -> None:
    """record_upload for each of `uploads`, in one transaction."""
    url = os.environ["DATABASE_URL"]
    schema.migrate(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn, conn.transaction():
        conn.cursor().executemany(
            """INSERT INTO uploads (id, tenant, file_name, columns, queue, rows, confirmed, published_at)
               VALUES (%s, %s, 'published by a test', '{id}', %s, %s, %s, now())""",
            [(u.id, u.tenant, u.queue, u.rows, u.rows) for u in uploads])


def forget_uploads(queue: str) -> int:
    """Delete from the ledger DATABASE_URL names every upload into `queue`'s upload queues, and their rows'
    outcomes and starts; return how many uploads there were."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn, \
            conn.transaction():
        ids = [row[0] for row in conn.execute("DELETE FROM uploads WHERE starts_with(queue, %s) RETURNING id",
                                              (message.upload_queue(queue, ""),))]
        for table in ("row_outcomes", "redelivered_starts"):
            conn.execute(f"DELETE FROM {table} WHERE upload_id = ANY(%s)", (ids,))
    return len(ids)


def upload_counts(upload_id: str) -> tuple[int, int]:
    """The upload's `done` and `failed` in the ledger DATABASE_URL names."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT done, failed FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    assert found is not None, f"no upload {upload_id} in the ledger"
    return found[0], found[1]


def finished(upload_id: str) -> int:
    """How many of the upload's rows have an outcome, done or failed."""
    done, failed = upload_counts(upload_id)
    return done + failed


def finished_into(queue: str) -> int:
    """How many rows have an outcome, over every upload into `queue`'s upload queues."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT coalesce(sum(done + failed), 0) FROM uploads WHERE starts_with(queue, %s)",
                             (message.upload_queue(queue, ""),)).fetchone()
    return int(found[0]) if found else 0

