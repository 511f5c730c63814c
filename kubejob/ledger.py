"""The ledger in PostgreSQL: what happened to each upload and each of its rows.

The producer records an upload before it publishes a row and moves `confirmed` forward as
the broker confirms; the worker records each row's outcome before it acks the message and
adds it to the upload's `done` or `failed` in the same transaction, so the counts never
drift from the rows. The schema is created and upgraded here, by whichever service starts
first; an advisory lock makes concurrent starts wait for each other.
"""

import psycopg

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
]


def reason(exc: psycopg.Error) -> str:
    """The first line of what PostgreSQL or libpq said; libpq repeats it once per address tried."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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
