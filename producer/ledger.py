"""The producer's side of the ledger: uploads recorded before publishing, and read back.

Errors: a PostgreSQL that cannot be reached or fails a statement becomes `LedgerUnavailable`
(the upload gets 503 and nothing is published); the refusals of an idempotent retry are
`KeyReused` and `UploadBusy`.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from kubejob import ledger as schema


class LedgerUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer."""


class KeyReused(Exception):
    """The Idempotency-Key was first used with a different file."""


class UploadBusy(Exception):
    """Another request is publishing the upload of this Idempotency-Key right now."""


@dataclass(frozen=True)
class Upload:
    """One upload as the ledger has it."""

    id: str
    file_name: str
    columns: list[str]
    queue: str
    rows: int
    confirmed: int
    done: int
    failed: int
    redelivered: int
    created_at: datetime
    published_at: datetime | None
    finished_at: datetime | None
    file_sha256: str | None

    @property
    def state(self) -> str:
        """`publishing` until the broker confirmed every row, `done` once every row has an outcome."""
        if self.done + self.failed >= self.rows:
            return "done"
        return "processing" if self.published_at else "publishing"


@dataclass(frozen=True)
class FailedRow:
    row_number: int
    attempts: int
    error: str | None
    data: dict[str, str] | None


_UPLOAD = """SELECT id, file_name, columns, queue, rows, confirmed, done, failed, redelivered,
                    created_at, published_at, finished_at, file_sha256 FROM uploads"""


class Ledger:
    """Queries on a pool of connections; every method raises LedgerUnavailable when PostgreSQL fails."""

    def __init__(self, pool: AsyncConnectionPool, *, claim_timeout: timedelta) -> None:
        self._pool, self._claim_timeout = pool, claim_timeout
        self.problem: str | None = None  # as of the last ping of watch()

    async def start(self, *, key: str | None, file_name: str, sha256: str | None, columns: list[str],
                    rows: int, queue: str, publisher: str) -> Upload:
        """Record a new upload, or with a known `key` claim its earlier one to publish what is left."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if key is not None:
                    earlier = await self._claim(conn, key=key, sha256=sha256, publisher=publisher)
                    if earlier is not None:
                        return earlier
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(
                    """INSERT INTO uploads (id, idempotency_key, file_name, file_sha256, columns, queue, rows,
                                            publisher, publisher_seen)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                       RETURNING id, file_name, columns, queue, rows, confirmed, done, failed, redelivered,
                                 created_at, published_at, finished_at, file_sha256""",
                    (uuid.uuid4().hex, key, file_name, sha256, columns, queue, rows, publisher))
                created = await cursor.fetchone()
                assert created is not None
                return created
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def _claim(self, conn: psycopg.AsyncConnection, *, key: str, sha256: str | None,
                     publisher: str) -> Upload | None:
        # Serialises two first requests with the same key: the second waits for the first's insert.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        cursor = conn.cursor(row_factory=class_row(Upload))
        await cursor.execute(_UPLOAD + " WHERE idempotency_key = %s FOR UPDATE", (key,))
        earlier = await cursor.fetchone()
        if earlier is None:
            return None
        if earlier.file_sha256 != sha256:
            raise KeyReused(earlier.id)
        if earlier.published_at is None:
            claimed = await conn.execute(
                """UPDATE uploads SET publisher = %s, publisher_seen = now()
                   WHERE id = %s AND (publisher IS NULL OR publisher_seen < now() - %s)""",
                (publisher, earlier.id, self._claim_timeout))
            if claimed.rowcount == 0:
                raise UploadBusy(earlier.id)
        return earlier

    async def progress(self, upload_id: str, *, confirmed: int, publisher: str) -> None:
        """The broker has confirmed the first `confirmed` rows; the claim is still ours."""
        await self._execute("""UPDATE uploads SET confirmed = greatest(confirmed, %s), publisher_seen = now()
                               WHERE id = %s AND publisher = %s""", (confirmed, upload_id, publisher))

    async def published(self, upload_id: str, *, publisher: str) -> None:
        """Every row is confirmed: the upload moves on to `processing`."""
        await self._execute("""UPDATE uploads SET confirmed = rows, published_at = now(), publisher = NULL
                               WHERE id = %s AND publisher = %s""", (upload_id, publisher))

    async def release(self, upload_id: str, *, confirmed: int, publisher: str) -> None:
        """Publishing stopped part-way: keep how far it got, and let a retry claim the upload."""
        await self._execute("""UPDATE uploads SET confirmed = greatest(confirmed, %s), publisher = NULL
                               WHERE id = %s AND publisher = %s""", (confirmed, upload_id, publisher))

    async def get(self, upload_id: str) -> Upload | None:
        try:
            async with self._pool.connection() as conn:
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(_UPLOAD + " WHERE id = %s", (upload_id,))
                return await cursor.fetchone()
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def recent(self, *, limit: int, offset: int) -> list[Upload]:
        """Uploads newest first."""
        try:
            async with self._pool.connection() as conn:
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(_UPLOAD + " ORDER BY created_at DESC, id LIMIT %s OFFSET %s", (limit, offset))
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def unfinished(self, *, limit: int) -> list[Upload]:
        """Uploads not done yet, newest first."""
        try:
            async with self._pool.connection() as conn:
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(_UPLOAD + " WHERE done + failed < rows ORDER BY created_at DESC, id LIMIT %s",
                                     (limit,))
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def failed_rows(self, upload_id: str) -> AsyncIterator[FailedRow]:
        """The upload's dead-lettered rows in row order, streamed from a server-side cursor."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cursor = conn.cursor(name="failed_rows", row_factory=class_row(FailedRow))
                await cursor.execute(
                    """SELECT row_number, attempts, error, data FROM row_outcomes
                       WHERE upload_id = %s AND failed ORDER BY row_number""", (upload_id,))
                async for row in cursor:
                    yield row
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def forget_older_than(self, age: timedelta) -> int:
        """Delete uploads and row outcomes older than `age`; return how many uploads went."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("DELETE FROM row_outcomes WHERE recorded_at < now() - %s", (age,))
                await conn.execute("DELETE FROM redelivered_starts WHERE started_at < now() - %s", (age,))
                deleted = await conn.execute("DELETE FROM uploads WHERE created_at < now() - %s", (age,))
                return deleted.rowcount
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

    async def ping(self) -> None:
        await self._execute("SELECT 1", ())

    async def watch(self, every: float) -> None:
        """Ping PostgreSQL every `every` seconds, keeping in `problem` why it did not answer (None if it did).

        /readyz reads `problem` instead of pinging: under load a ping waits its turn on the event loop
        several times over (0.5 to 1 s with four uploads on a loaded 2-core machine).
        """
        while True:
            try:
                await self.ping()
                self.problem = None
            except LedgerUnavailable as exc:
                self.problem = str(exc)
            await asyncio.sleep(every)

    async def _execute(self, statement: str, params: tuple) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(statement, params)
        except psycopg.Error as exc:
            raise LedgerUnavailable(schema.reason(exc)) from None

