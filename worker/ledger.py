"""The worker's side of the ledger: each row's outcome, recorded before the row is acked.

Outcomes are written in batches, one transaction each, which also adds them to their
uploads' `done` and `failed`; a row the ledger already has is not counted twice. Errors: a
PostgreSQL that cannot be reached or fails the batch is `LedgerUnavailable`.
"""

import collections
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import NamedTuple

import psycopg
from psycopg_pool import ConnectionPool

from kubejob import ledger as schema
from kubejob.errors import LedgerUnavailable

log = logging.getLogger(__name__)


class RowOutcome(NamedTuple):  # a tuple: made for every row recorded, at half a dataclass's cost
    """What became of one row: done, or failed for good after `attempts` with `error`."""

    upload_id: str
    row: int
    attempts: int
    error: str | None = None
    data: dict[str, str] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


_RECORD = """
WITH new AS (
    INSERT INTO row_outcomes (upload_id, row_number, failed, attempts, error, data)
    SELECT * FROM unnest(%s::text[], %s::integer[], %s::boolean[], %s::integer[], %s::text[], %s::jsonb[])
    ON CONFLICT DO NOTHING
    RETURNING upload_id, failed
), counted AS (
    SELECT upload_id, count(*) FILTER (WHERE NOT failed) AS done, count(*) FILTER (WHERE failed) AS failed
    FROM new GROUP BY upload_id
)
UPDATE uploads SET done = uploads.done + counted.done, failed = uploads.failed + counted.failed,
    finished_at = CASE WHEN uploads.done + counted.done + uploads.failed + counted.failed >= uploads.rows
                       THEN coalesce(uploads.finished_at, now()) END
FROM counted WHERE uploads.id = counted.upload_id
"""

_REDELIVERED = "UPDATE uploads SET redelivered = redelivered + %s WHERE id = %s"

_START = """
INSERT INTO redelivered_starts AS s (upload_id, row_number, starts) VALUES (%s, %s, 1)
ON CONFLICT (upload_id, row_number) DO UPDATE SET starts = s.starts + 1, started_at = now()
RETURNING starts
"""


def _array(values: list[str | None]) -> str:
    """A PostgreSQL array literal of `values`, which the query casts.

    psycopg adapts a list element by element in Python, a tenth of a draining worker's time;
    this is a few string operations per element.
    """
    return "{" + ",".join("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


def _numbers(values: list[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


class Ledger:
    """A small pool: the ledger thread records batches, the handler threads check redeliveries."""

    def __init__(self, conninfo: str, *, timeout_s: float) -> None:
        self._conninfo, self._timeout_s = conninfo, timeout_s
        # Redelivered rows are checked one at a time (see worker.rows), so two connections serve.
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=2, timeout=timeout_s, open=False,
                                    kwargs={"connect_timeout": int(max(1, timeout_s)), "autocommit": True})

    def open(self) -> None:
        """Bring the schema up to date and open the pool; raises LedgerUnavailable."""
        with schema.map_psycopg_errors():
            schema.migrate(self._conninfo, connect_timeout=self._timeout_s)
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    def record(self, outcomes: list[RowOutcome], *, redelivered: collections.Counter[str]) -> None:
        """Write `outcomes`, and count the redeliveries acked without handling, in one transaction."""
        if not outcomes and not redelivered:
            return
        columns = (_array([o.upload_id for o in outcomes]), _numbers([o.row for o in outcomes]),
                   "{" + ",".join("t" if o.failed else "f" for o in outcomes) + "}",
                   _numbers([o.attempts for o in outcomes]), _array([o.error for o in outcomes]),
                   _array([json.dumps(o.data) if o.data is not None else None for o in outcomes]))
        statements: list[tuple[str, tuple[object, ...]]] = [(_RECORD, columns)] if outcomes else []
        statements += [(_REDELIVERED, (count, upload_id)) for upload_id, count in redelivered.items()]
        alone = len(statements) == 1  # atomic by itself: no BEGIN and COMMIT, each a round trip of its own
        with (schema.map_psycopg_errors(), self._pool.connection() as conn,
              contextlib.nullcontext() if alone else conn.transaction()):
            for query, parameters in statements:
                conn.execute(query, parameters)

    def open_uploads(self, queue: str) -> list[schema.OpenUpload]:
        """The uploads into `queue` whose own queues exist, oldest first; raises LedgerUnavailable."""
        with schema.map_psycopg_errors(), self._pool.connection() as conn:
            return schema.open_uploads(conn, queue)

    def open_uploads_as_they_change(self, queue: str, *, every_s: float) -> Iterator[list[schema.OpenUpload]]:
        """`open_uploads` now, then again each time an upload is added, paused, resumed or cancelled (PostgreSQL
        notifies it), and at least every `every_s` (an upload also ends as its last row is recorded).

        On a connection of its own, which LISTEN holds; raises LedgerUnavailable.
        """
        with (schema.map_psycopg_errors(),
              psycopg.connect(self._conninfo, autocommit=True, connect_timeout=int(max(1, self._timeout_s))) as conn):
            conn.execute(f"LISTEN {schema.UPLOADS_CHANNEL}")
            while True:
                yield schema.open_uploads(conn, queue)
                for _ in conn.notifies(timeout=every_s, stop_after=1):
                    pass

    def start_redelivered(self, upload_id: str, row: int) -> int:
        """Count one more start of a redelivered row; return how many came before (0 if the ledger cannot say)."""
        try:
            with schema.map_psycopg_errors(), self._pool.connection() as conn:
                found = conn.execute(_START, (upload_id, row)).fetchone()
        except LedgerUnavailable as exc:
            log.warning("ledger unavailable, not counting a redelivered row's start", extra={"error": str(exc)})
            return 0
        return found[0] - 1 if found else 0

    def has(self, upload_id: str, row: int) -> bool:
        """Whether the row already has an outcome; False when the ledger cannot say (handle it again)."""
        try:
            with schema.map_psycopg_errors(), self._pool.connection() as conn:
                found = conn.execute("SELECT 1 FROM row_outcomes WHERE upload_id = %s AND row_number = %s",
                                     (upload_id, row)).fetchone()
        except LedgerUnavailable as exc:
            log.warning("ledger unavailable, handling a redelivered row again", extra={"error": str(exc)})
            return False
        return found is not None

