"""The ledger in PostgreSQL: what happened to each upload and each of its rows.

The producer records an upload before it publishes a row and moves `confirmed` forward as
the broker confirms; the worker records each row's outcome before it acks the message and
adds it to the upload's `done` or `failed` in the same transaction, so the counts never
drift from the rows. The schema is created and upgraded here, by whichever service starts
first; an advisory lock makes concurrent starts wait for each other.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import psycopg

from kubejob import message
from kubejob.backoff import doubling
from kubejob.errors import LedgerUnavailable

T = TypeVar("T")

# Any constant works; it only has to be the same in every service.
_MIGRATION_LOCK = 4_705_307_263

# Append only: a service applies those it has not applied yet, in order, each once.
MIGRATIONS = [
    """
    CREATE TABLE uploads (
        id text PRIMARY KEY,
        idempotency_key text UNIQUE,
        file_name text NOT NULL,
        file_sha256 text,
        columns text[] NOT NULL,
        queue text NOT NULL,
        rows integer NOT NULL CHECK (rows > 0),
        confirmed integer NOT NULL DEFAULT 0,
        done integer NOT NULL DEFAULT 0,
        failed integer NOT NULL DEFAULT 0,
        redelivered integer NOT NULL DEFAULT 0,
        publisher text,
        publisher_seen timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX uploads_newest_first ON uploads (created_at DESC);
    -- No foreign key: a row of an upload the ledger never saw (published by hand) is still
    -- recorded, rather than blocking its worker's acks.
    CREATE TABLE row_outcomes (
        upload_id text NOT NULL,
        row_number integer NOT NULL,
        failed boolean NOT NULL,
        attempts integer NOT NULL,
        error text,
        data jsonb,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (upload_id, row_number)
    );
    CREATE INDEX row_outcomes_recorded_at ON row_outcomes (recorded_at);
    """,
    """
    -- How often a redelivered row without an outcome was started: a worker that dies while
    -- handling a row leaves its count up, which is how the worker tells a row that kills it.
    CREATE TABLE redelivered_starts (
        upload_id text NOT NULL,
        row_number integer NOT NULL,
        starts integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (upload_id, row_number)
    );
    CREATE INDEX redelivered_starts_started_at ON redelivered_starts (started_at);
    """,
    """
    -- A publisher now holds its upload by a session advisory lock (producer.ledger), which ends
    -- with its connection, instead of a lease that outlived a dead producer by a minute.
    -- `parameters` are what an Idempotency-Key binds besides the file; `error` why publishing
    -- was refused for good.
    ALTER TABLE uploads DROP COLUMN publisher, DROP COLUMN publisher_seen,
        ADD COLUMN parameters jsonb NOT NULL DEFAULT '{}', ADD COLUMN error text;
    """,
    """
    -- Many users on one deployment (producer.auth): an upload belongs to a tenant, uploads made
    -- before there were tenants to `default`, and an Idempotency-Key is unique per tenant.
    ALTER TABLE uploads ADD COLUMN tenant text NOT NULL DEFAULT 'default';
    ALTER TABLE uploads DROP CONSTRAINT uploads_idempotency_key_key;
    ALTER TABLE uploads ADD CONSTRAINT uploads_tenant_idempotency_key UNIQUE (tenant, idempotency_key);
    CREATE INDEX uploads_tenant_newest_first ON uploads (tenant, created_at DESC);
    CREATE TABLE tenants (
        name text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    -- A key is kept only as the SHA-256 of its text; `id` is the part of it that names it.
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        tenant text NOT NULL REFERENCES tenants (name),
        secret_sha256 bytea NOT NULL,
        scopes text[] NOT NULL CHECK (scopes <@ ARRAY['upload', 'read', 'admin'] AND cardinality(scopes) > 0),
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz,
        revoked_at timestamptz,
        last_used_at timestamptz
    );
    """,
    """
    -- A fair share of the workers (worker.share), and cancel and pause: each upload has a queue of its
    -- own (its `queue`). `queue_deleted_at` is NULL only while that queue exists: a new upload is
    -- recorded with it set, cleared once its publisher has declared the queue, and set again when the
    -- queue is deleted, past a grace after the upload is finished or cancelled. A tenant with no row
    -- here weighs 1.
    ALTER TABLE uploads ADD COLUMN paused_at timestamptz, ADD COLUMN cancelled_at timestamptz,
        ADD COLUMN queue_deleted_at timestamptz;
    ALTER TABLE tenants ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000);
    CREATE INDEX uploads_open ON uploads (created_at, id) WHERE queue_deleted_at IS NULL;
    -- Workers listen, so that they serve a new upload (its queue declared), and stop on a paused or
    -- cancelled one, at once.
    CREATE FUNCTION kubejob_upload_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('kubejob_uploads', NEW.queue);
        RETURN NULL;
    END $$;
    CREATE TRIGGER upload_changed AFTER INSERT OR UPDATE OF paused_at, cancelled_at, queue_deleted_at ON uploads
        FOR EACH ROW EXECUTE FUNCTION kubejob_upload_changed();
    """,
]

# What the trigger of migration 5 notifies on, with the upload's queue, when an upload is added, its queue
# declared or deleted, or it is paused, resumed or cancelled.
UPLOADS_CHANNEL = "kubejob_uploads"


class OpenUpload(NamedTuple):
    """An upload whose queue exists (declared, not yet deleted), as workers and the scaler read it to know what
    to serve."""

    id: str
    tenant: str
    weight: int  # its tenant's
    queue: str
    paused: bool
    cancelled: bool
    finished: bool  # every row has an outcome; its queue may still hold copies of some

    @property
    def served(self) -> bool:
        """Its rows are to be handled now."""
        return not (self.paused or self.cancelled or self.finished)


_OPEN_UPLOADS = """
SELECT u.id, u.tenant, coalesce(t.weight, 1), u.queue, u.paused_at IS NOT NULL, u.cancelled_at IS NOT NULL,
       u.done + u.failed >= u.rows
FROM uploads u LEFT JOIN tenants t ON t.name = u.tenant
WHERE u.queue_deleted_at IS NULL AND starts_with(u.queue, %s) ORDER BY u.created_at, u.id
"""


def open_uploads(conn: psycopg.Connection, queue: str) -> list[OpenUpload]:
    """Every upload into `queue` (QUEUE_NAME) whose own queue has not been deleted, oldest first; raises
    LedgerUnavailable. Deployments with other queue names may share the ledger."""
    with map_psycopg_errors():
        return [OpenUpload(*row) for row in conn.execute(_OPEN_UPLOADS, (message.upload_queue(queue, ""),))]


def reason(exc: psycopg.Error) -> str:
    """The first line of what PostgreSQL or libpq said; libpq repeats it once per address tried."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def map_psycopg_errors() -> Iterator[None]:
    """psycopg's errors as LedgerUnavailable, the one error the services know the ledger by."""
    try:
        yield
    except psycopg.Error as exc:
        raise LedgerUnavailable(reason(exc)) from exc


def migrate(conninfo: str, *, connect_timeout: float = 10) -> int:
    """Bring the schema up to date; return its version. Safe to call from many processes at once."""
    with psycopg.connect(conninfo, connect_timeout=int(max(1, connect_timeout))) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = row[0] if row else 0
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
            conn.execute(statements)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)


class Retry:
    """When to try an unreachable ledger again: doubling waits, and a deadline to give up at."""

    def __init__(self, *, give_up_after_s: float, first_wait_s: float = 0.5, max_wait_s: float = 5.0) -> None:
        self._give_up_after_s, self._first_wait_s, self._max_wait_s = give_up_after_s, first_wait_s, max_wait_s
        self.failing_since: float | None = None
        self._failures, self._next = 0, 0.0

    def due(self, now: float) -> bool:
        return now >= self._next

    def failed(self, now: float) -> bool:
        """Note a failure; True when it has failed for longer than allowed."""
        if self.failing_since is None:
            self.failing_since = now
        self._next = now + doubling(self._first_wait_s, self._failures, cap_s=self._max_wait_s)
        self._failures += 1
        return now - self.failing_since >= self._give_up_after_s

    def succeeded(self) -> None:
        self.failing_since, self._failures, self._next = None, 0, 0.0


def keep_trying(attempt: Callable[[], T], *, give_up_after_s: float, log: logging.Logger) -> T:
    """`attempt()` until it succeeds, a warning for each LedgerUnavailable; that error once it has failed for
    `give_up_after_s`.

    At start, so that a service started with PostgreSQL (as `make up` and a Deployment do)
    waits for it instead of exiting and being restarted.
    """
    retry = Retry(give_up_after_s=give_up_after_s)
    while True:
        try:
            return attempt()
        except LedgerUnavailable as exc:
            if retry.failed(time.monotonic()):
                raise
            log.warning("ledger unavailable at start, retrying", extra={"error": str(exc)})
        while not retry.due(time.monotonic()):
            time.sleep(0.1)


def reachable(conninfo: str, *, connect_timeout: float) -> None:
    """Raise LedgerUnavailable unless PostgreSQL takes a connection."""
    with map_psycopg_errors():
        psycopg.connect(conninfo, connect_timeout=int(max(1, connect_timeout))).close()
