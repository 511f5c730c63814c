"""The open uploads, as the ledger lists them (kubejob.ledger.open_uploads): which queues hold work to serve.

Whether an upload is paused, cancelled or finished is the ledger's fact; its queue cannot say
(a paused upload's rows wait there untouched). One connection is kept between polls and made
again after any failure. Every failure is LedgerUnavailable, the one error the services know the
ledger by, and no read waits longer than its timeout: connecting is bounded by libpq's
connect_timeout, and a query on a network gone silent by shutting the connection's socket, which
makes psycopg fail it at once (its blocking calls have no timeout of their own).
"""

import os
import socket
import threading

import psycopg
import psycopg.errors

from kubejob import ledger
from kubejob.errors import LedgerUnavailable


class OpenUploads:
    """Reads the open uploads into `queue` (QUEUE_NAME) from PostgreSQL."""

    def __init__(self, conninfo: str, *, queue: str, timeout_s: float) -> None:
        self._conninfo, self._queue, self._timeout_s = conninfo, queue, timeout_s
        self._conn: psycopg.Connection | None = None

    def read(self) -> list[ledger.OpenUpload]:
        """Every upload into the queue whose own queue exists, oldest first; raises LedgerUnavailable."""
        deadline = None
        try:
            conn = self._connected()
            with (deadline := _Deadline(conn, self._timeout_s)):
                uploads = ledger.open_uploads(conn, self._queue)
        except LedgerUnavailable as exc:
            self._drop()
            if deadline is not None and deadline.passed:
                raise LedgerUnavailable(f"ledger: no answer within {self._timeout_s}s") from exc
            if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                return []  # no service has created the schema yet, so no upload exists: as a queue not declared
            raise LedgerUnavailable(f"ledger: {exc}") from exc
        if deadline.passed:  # answered as the socket was shut: the next read connects again
            self._drop()
        return uploads

    def close(self) -> None:
        self._drop()

    def _connected(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            with ledger.map_psycopg_errors():
                # libpq waits at least 2 s whatever is asked.
                self._conn = psycopg.connect(self._conninfo, autocommit=True,
                                             connect_timeout=max(2, round(self._timeout_s)))
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Deadline:
    """Shuts `conn`'s socket if the block has not ended within `timeout_s`; `passed` says whether it did."""

    def __init__(self, conn: psycopg.Connection, timeout_s: float) -> None:
        self._fileno = conn.fileno()
        self._timer = threading.Timer(timeout_s, self._shut)
        self._timer.daemon = True
        self._lock = threading.Lock()
        self.passed = False

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._timer.cancel()
            self._fileno = -1  # from here the fd may be closed and reused: never shut it

    def _shut(self) -> None:
        with self._lock:
            if self._fileno < 0:
                return
            self.passed = True
            # A duplicate, so that closing it leaves psycopg's own fd; shutdown acts on the socket both share.
            with socket.socket(fileno=os.dup(self._fileno)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
