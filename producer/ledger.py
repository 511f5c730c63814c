"""The producer's side of the ledger: uploads recorded before publishing, and read back.

Errors: a PostgreSQL that cannot be reached or fails a statement becomes `LedgerUnavailable`
(the upload gets 503 and nothing is published); the refusals of an idempotent retry are
`KeyReused` and `UploadBusy`; a download that found no free download connection in time is
`DownloadsBusy`. A cancelled upload is no error here: it has nothing left to publish.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kubejob import ledger as schema
from kubejob import message
from kubejob.errors import LedgerUnavailable, Permanent, Temporary


class KeyReused(Permanent):
    """The Idempotency-Key was first used with a different file or other parameters; `differs` says what it was."""

    def __init__(self, upload_id: str, differs: str) -> None:
        super().__init__(upload_id)
        self.upload_id, self.differs = upload_id, differs


class UploadBusy(Temporary):
    """Another request is publishing the upload of this Idempotency-Key right now."""


class TooManyOpen(Temporary):
    """The tenant has MAX_OPEN_UPLOADS_PER_TENANT uploads open (neither done nor cancelled) already."""

    def __init__(self, tenant: str, open_uploads: int) -> None:
        super().__init__(tenant)
        self.tenant, self.open_uploads = tenant, open_uploads


class DownloadsBusy(Temporary):
    """Every download connection stayed taken for as long as a download waits for one."""


# The class of the session advisory lock (with hashtext(upload id)) that a publisher holds on its upload.
PUBLISHING_LOCK = 4_705_307


@dataclass(frozen=True)
class UploadSummary:
    """An upload's file, queue, counts and times: what its status answer shows of it (producer.status)."""

    file_name: str
    queue: str
    rows: int
    confirmed: int
    done: int
    failed: int
    redelivered: int
    created_at: datetime
    published_at: datetime | None
    finished_at: datetime | None
    paused_at: datetime | None
    cancelled_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class Upload(UploadSummary):
    """One upload as the ledger has it."""

    id: str
    columns: list[str]
    file_sha256: str | None
    parameters: dict[str, str]
    publishing: bool  # a live publisher holds it
    tenant: str = "default"

    @property
    def finished(self) -> bool:
        """Every row has an outcome."""
        return self.done + self.failed >= self.rows

    @property
    def state(self) -> str:
        """`publishing` (or `interrupted` with no publisher left) until the broker confirmed every row, then
        `processing`, `done` once every row has an outcome; `failed` when publishing was refused for good;
        `paused` while paused and not done; `cancelled` once cancelled, whatever else holds."""
        if self.cancelled_at is not None:
            return "cancelled"
        if self.finished:
            return "done"
        if self.paused_at is not None:
            return "paused"
        if self.published_at:
            return "processing"
        if self.error is not None:
            return "failed"
        return "publishing" if self.publishing else "interrupted"


@dataclass(frozen=True)
class StoredKey:
    """An API key as the ledger has it: never the key, only its hash."""

    tenant: str
    scopes: list[str]
    secret_sha256: bytes
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class FailedRow:
    row_number: int
    attempts: int
    error: str | None
    data: dict[str, str] | None


# Whether a live publisher holds the upload (Claim).
_HELD = f"""EXISTS (
    SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND classid = {PUBLISHING_LOCK} AND objid = hashtext(uploads.id)::oid AND objsubid = 2
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""
_UPLOAD = f"""SELECT id, file_name, columns, queue, rows, confirmed, done, failed, redelivered,
                     created_at, published_at, finished_at, paused_at, cancelled_at, file_sha256, parameters,
                     error, tenant, published_at IS NULL AND {_HELD} AS publishing
              FROM uploads"""
# Each leaves the upload as it was when it cannot apply: cancelling a finished upload, pausing one that is finished
# or cancelled, resuming a cancelled one. Done again, each changes nothing.
_CANCEL = """UPDATE uploads SET cancelled_at = coalesce(cancelled_at, now())
             WHERE id = %s AND (cancelled_at IS NOT NULL OR done + failed < rows)"""
_PAUSE = """UPDATE uploads SET paused_at = coalesce(paused_at, now())
            WHERE id = %s AND cancelled_at IS NULL AND done + failed < rows"""
_RESUME = "UPDATE uploads SET paused_at = NULL WHERE id = %s AND cancelled_at IS NULL"
# The uploads whose own queue is no longer needed: finished or cancelled more than a grace period ago, or about to
# be forgotten (older than the retention) whatever their state. One that a publisher holds is left for a later
# sweep: a keyed retry may be publishing into its queue again.
_UNNEEDED_QUEUES = f"""SELECT id, queue FROM uploads
    WHERE queue_deleted_at IS NULL AND queue = %(prefix)s || id
      AND (cancelled_at < now() - %(grace)s OR (done + failed >= rows AND finished_at < now() - %(grace)s)
           OR created_at < now() - %(retention)s)
      AND NOT {_HELD}
    ORDER BY created_at, id LIMIT %(limit)s"""


class Claim:
    """A publisher's hold on one upload: a connection of its own holding the upload's session advisory lock.

    The lock ends with the connection, so an upload whose producer died, or lost PostgreSQL,
    is free for a retry at once, and its state reads `interrupted`.
    """

    def __init__(self, conn: psycopg.AsyncConnection, upload_id: str) -> None:
        self._conn, self.upload_id = conn, upload_id

    async def opened(self) -> None:
        """The upload's queue exists: workers may serve it (kubejob.ledger.open_uploads). A new upload is recorded
        as having none, so that no worker consumes a queue not declared yet, which would close its channel."""
        await self._execute("UPDATE uploads SET queue_deleted_at = NULL WHERE id = %s AND queue_deleted_at IS NOT NULL",
                            (self.upload_id,))

    async def progress(self, confirmed: int) -> bool:
        """The broker has confirmed the first `confirmed` rows: a retry starts after them. Whether the upload was
        cancelled meanwhile."""
        return await self._cancelled("UPDATE uploads SET confirmed = greatest(confirmed, %s) WHERE id = %s "
                                     "RETURNING cancelled_at IS NOT NULL", (confirmed, self.upload_id))

    async def published(self) -> bool:
        """Every row is confirmed: the upload moves on to `processing`. Whether it was cancelled meanwhile."""
        return await self._cancelled("UPDATE uploads SET confirmed = rows, published_at = now() WHERE id = %s "
                                     "RETURNING cancelled_at IS NOT NULL", (self.upload_id,))

    async def refused(self, error: str, *, confirmed: int) -> None:
        """Publishing cannot succeed for this file as it is: the upload ends in `failed`."""
        await self._execute("UPDATE uploads SET confirmed = greatest(confirmed, %s), error = %s WHERE id = %s",
                            (confirmed, error, self.upload_id))

    async def close(self) -> None:
        """Let go of the upload before answering: closing alone ends the lock only once the server has read the
        close, and a status read right after the answer could still see the publisher."""
        with contextlib.suppress(psycopg.Error):  # a connection that broke has let go already
            await self._conn.execute("SELECT pg_advisory_unlock_all()")
        await self._conn.close()

    async def _execute(self, statement: str, params: tuple) -> None:
        with schema.map_psycopg_errors():
            await self._conn.execute(statement, params)

    async def _cancelled(self, statement: str, params: tuple) -> bool:
        with schema.map_psycopg_errors():
            row = await (await self._conn.execute(statement, params)).fetchone()
        return bool(row and row[0])


class FailedRows:
    """An upload's failed rows, read from a server-side cursor on a download connection held until `close`."""

    def __init__(self, cursor: psycopg.AsyncServerCursor[FailedRow], held: contextlib.AsyncExitStack) -> None:
        self._cursor, self._held = cursor, held

    async def __aiter__(self) -> AsyncIterator[FailedRow]:
        with schema.map_psycopg_errors():
            async for row in self._cursor:
                yield row

    async def close(self) -> None:
        """Give the connection back."""
        await _let_go(self._held)


async def _let_go(held: contextlib.AsyncExitStack) -> None:
    # A connection that PostgreSQL ended (past a timeout) fails to end its transaction; the pool replaces it.
    with contextlib.suppress(psycopg.Error):
        await held.aclose()


class Ledger:
    """Queries on a pool of connections, and downloads on a small pool of their own, so that slow readers of
    downloads never take the connections uploads, status reads and /readyz use; every method raises
    LedgerUnavailable when PostgreSQL fails."""

    def __init__(self, pool: AsyncConnectionPool, *, downloads: AsyncConnectionPool, conninfo: str,
                 connect_timeout: float) -> None:
        self._pool, self._downloads = pool, downloads
        self._conninfo, self._connect_timeout = conninfo, int(max(1, connect_timeout))
        self.problem: str | None = None  # as of the last ping of watch()

    async def start(self, *, tenant: str, key: str | None, file_name: str, sha256: str | None,
                    parameters: dict[str, str], columns: list[str], rows: int, queue: str,
                    max_open: int) -> tuple[Upload, Claim | None]:
        """Record a new upload of `tenant`, its rows to go into a queue of its own in the family of `queue`
        (kubejob.message.upload_queue), or find its earlier one of a known `key`, and claim it to publish what
        is left.

        The claim is None for an upload with nothing left to publish: published, refused for good, or
        cancelled, which is never taken up again. Raises KeyReused, UploadBusy, LedgerUnavailable.
        """
        with schema.map_psycopg_errors():
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                         connect_timeout=self._connect_timeout)
        try:
            with schema.map_psycopg_errors():
                upload = await self._claim(conn, tenant=tenant, key=key, max_open=max_open, file_name=file_name,
                                           sha256=sha256,
                                           parameters=parameters, columns=columns, rows=rows, queue=queue)
        except BaseException:
            await conn.close()
            raise
        if upload.published_at is not None or upload.error is not None or upload.cancelled_at is not None:
            await conn.close()
            return upload, None
        return upload, Claim(conn, upload.id)

    async def _claim(self, conn: psycopg.AsyncConnection, *, tenant: str, key: str | None, max_open: int,
                     file_name: str, sha256: str | None, parameters: dict[str, str], columns: list[str], rows: int,
                     queue: str) -> Upload:
        new_id = uuid.uuid4().hex
        # Held before the insert commits, so that no reader ever sees the new upload without its publisher.
        await conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (PUBLISHING_LOCK, new_id))
        async with conn.transaction():
            earlier = (await self._earlier(conn, tenant=tenant, key=key, sha256=sha256, parameters=parameters)
                       if key else None)
            if earlier is None:
                await self._room_for_one_more(conn, tenant=tenant, max_open=max_open)
                # Recorded without a queue (queue_deleted_at set) until its publisher has declared it: Claim.opened.
                await conn.execute(
                    """INSERT INTO uploads (id, tenant, idempotency_key, file_name, file_sha256, parameters, columns,
                                            queue, rows, queue_deleted_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())""",
                    (new_id, tenant, key, file_name, sha256, Jsonb(parameters), columns,
                     message.upload_queue(queue, new_id), rows))
        if earlier is None:
            return await self._read(conn, new_id)
        await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (PUBLISHING_LOCK, new_id))
        if earlier.cancelled_at is not None:  # never taken up again, even while its publisher is still stopping
            return earlier
        if earlier.published_at is None and earlier.error is None:
            locked = await conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (PUBLISHING_LOCK, earlier.id))
            if not (await locked.fetchone() or (False,))[0]:
                raise UploadBusy(earlier.id)
        # Read again under the lock: the publisher before us moved `confirmed` until it let go.
        return await self._read(conn, earlier.id)

    @staticmethod
    async def _room_for_one_more(conn: psycopg.AsyncConnection, *, tenant: str, max_open: int) -> None:
        """Raise TooManyOpen if the tenant has `max_open` uploads neither done nor cancelled; in the transaction that
        records the new one, which the lock serialises with the tenant's other new uploads."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", (tenant,))
        found = await (await conn.execute(
            "SELECT count(*) FROM uploads WHERE tenant = %s AND done + failed < rows AND cancelled_at IS NULL "
            "AND (queue_deleted_at IS NULL OR published_at IS NULL)", (tenant,))).fetchone()
        if found and found[0] >= max_open:
            raise TooManyOpen(tenant, found[0])

    @staticmethod
    async def _earlier(conn: psycopg.AsyncConnection, *, tenant: str, key: str, sha256: str | None,
                       parameters: dict[str, str]) -> Upload | None:
        # Serialises two first requests with the same key: the second waits for the first's insert.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (json.dumps([tenant, key]),))
        cursor = conn.cursor(row_factory=class_row(Upload))
        await cursor.execute(_UPLOAD + " WHERE tenant = %s AND idempotency_key = %s", (tenant, key))
        earlier = await cursor.fetchone()
        if earlier is None:
            return None
        if earlier.file_sha256 != sha256:
            raise KeyReused(earlier.id, "another file")
        differs = [f"{name} {earlier.parameters.get(name)!r} then, {value!r} now"
                   for name, value in parameters.items() if earlier.parameters.get(name) != value]
        if differs:
            raise KeyReused(earlier.id, f"the same file with other parameters: {'; '.join(differs)}")
        return earlier

    @staticmethod
    async def _read(conn: psycopg.AsyncConnection, upload_id: str) -> Upload:
        cursor = conn.cursor(row_factory=class_row(Upload))
        await cursor.execute(_UPLOAD + " WHERE id = %s", (upload_id,))
        upload = await cursor.fetchone()
        assert upload is not None  # uploads are deleted only after LEDGER_RETENTION_DAYS
        return upload

    async def get(self, upload_id: str) -> Upload | None:
        found = await self._uploads(" WHERE id = %s", (upload_id,))
        return found[0] if found else None

    async def recent(self, *, tenant: str, limit: int, offset: int) -> list[Upload]:
        """The tenant's uploads newest first."""
        return await self._uploads(" WHERE tenant = %s ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
                                   (tenant, limit, offset))

    async def unfinished(self, *, limit: int) -> list[Upload]:
        """Uploads not done yet nor cancelled, newest first."""
        return await self._uploads(" WHERE done + failed < rows AND cancelled_at IS NULL "
                                   "ORDER BY created_at DESC, id LIMIT %s", (limit,))

    async def cancel(self, upload_id: str) -> tuple[bool, Upload | None]:
        """Cancel the upload unless every row has an outcome: whether it is cancelled now, and the upload."""
        return await self._control(_CANCEL, upload_id)

    async def pause(self, upload_id: str) -> tuple[bool, Upload | None]:
        """Pause the upload unless it is finished or cancelled: whether it is paused now, and the upload."""
        return await self._control(_PAUSE, upload_id)

    async def resume(self, upload_id: str) -> tuple[bool, Upload | None]:
        """Resume the upload unless it is cancelled: whether it is unpaused now, and the upload."""
        return await self._control(_RESUME, upload_id)

    async def _control(self, statement: str, upload_id: str) -> tuple[bool, Upload | None]:
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn, conn.transaction():
                changed = await conn.execute(statement, (upload_id,))
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(_UPLOAD + " WHERE id = %s", (upload_id,))
                return changed.rowcount == 1, await cursor.fetchone()

    async def unneeded_queues(self, *, queue: str, grace: timedelta, retention: timedelta,
                              limit: int) -> list[tuple[str, str]]:
        """(upload id, queue) of the uploads of the family of `queue` whose own queue is still there and no longer
        needed: finished or cancelled more than `grace` ago, or made more than `retention` ago; none being
        published."""
        params = {"prefix": message.upload_queue(queue, ""), "grace": grace, "retention": retention, "limit": limit}
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                return [(row[0], row[1]) for row in await (await conn.execute(_UNNEEDED_QUEUES, params)).fetchall()]

    async def queues_deleted(self, upload_ids: list[str]) -> int:
        """Record that the uploads' queues are deleted; return how many were not recorded so yet."""
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                noted = await conn.execute("UPDATE uploads SET queue_deleted_at = now() "
                                           "WHERE id = ANY(%s) AND queue_deleted_at IS NULL", (upload_ids,))
                return noted.rowcount

    async def failed_rows(self, upload_id: str) -> FailedRows:
        """The upload's dead-lettered rows in row order, on a download connection; raises DownloadsBusy when
        none is free within the downloads pool's timeout, LedgerUnavailable when PostgreSQL fails."""
        held = contextlib.AsyncExitStack()
        try:
            with schema.map_psycopg_errors():
                try:
                    conn = await held.enter_async_context(self._downloads.connection())
                except PoolTimeout as exc:
                    if self.problem is None:
                        raise DownloadsBusy(str(exc)) from exc
                    raise
                await held.enter_async_context(conn.transaction())
                cursor = conn.cursor(name="failed_rows", row_factory=class_row(FailedRow))
                await cursor.execute(
                    """SELECT row_number, attempts, error, data FROM row_outcomes
                       WHERE upload_id = %s AND failed ORDER BY row_number""", (upload_id,))
        except BaseException:
            await _let_go(held)
            raise
        return FailedRows(cursor, held)

    async def forget_older_than(self, age: timedelta) -> int:
        """Delete uploads and row outcomes older than `age`; return how many uploads went."""
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("DELETE FROM row_outcomes WHERE recorded_at < now() - %s", (age,))
                await conn.execute("DELETE FROM redelivered_starts WHERE started_at < now() - %s", (age,))
                deleted = await conn.execute("DELETE FROM uploads WHERE created_at < now() - %s", (age,))
                return deleted.rowcount

    async def api_key(self, key_id: str) -> StoredKey | None:
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                cursor = conn.cursor(row_factory=class_row(StoredKey))
                await cursor.execute("""SELECT tenant, scopes, secret_sha256, expires_at, revoked_at, last_used_at
                                        FROM api_keys WHERE id = %s""", (key_id,))
                return await cursor.fetchone()

    async def key_used(self, key_id: str) -> None:
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))

    async def any_api_key(self) -> bool:
        """Whether an API key was ever made, revoked or not."""
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                found = await (await conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys)")).fetchone()
                return bool(found and found[0])

    async def ping(self) -> None:
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                await conn.execute("SELECT 1")

    async def watch(self, every: float) -> None:
        """Ping PostgreSQL every `every` seconds, keeping in `problem` why it did not answer (None if it did).

        /readyz reads `problem` instead of pinging: under load a ping waits its turn on the event loop
        several times over, and a probe would take as long (bench load).
        """
        while True:
            try:
                await self.ping()
                self.problem = None
            except LedgerUnavailable as exc:
                self.problem = str(exc)
            await asyncio.sleep(every)

    async def _uploads(self, where: str, params: tuple) -> list[Upload]:
        with schema.map_psycopg_errors():
            async with self._pool.connection() as conn:
                cursor = conn.cursor(row_factory=class_row(Upload))
                await cursor.execute(_UPLOAD + where, params)
                return await cursor.fetchall()

