"""Failed-rows downloads are read on a pool of their own: clients that read nothing of a large one hold
neither uploads nor /readyz, are ended after DOWNLOAD_TIMEOUT_SECONDS, and a download that finds every
download connection taken for that long gets 503 with Retry-After."""

import socket
import time

import httpx
import psycopg
import pytest

from tests.helpers.producer import csv_file, producer

ROWS = 10_000  # about 10 MB of CSV, far more than the sockets' buffers take
READERS = 10


def _record_failed_rows(database_url: str, upload_id: str) -> None:
    """ROWS failed rows of about 1 kB each, as workers would have recorded them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO row_outcomes (upload_id, row_number, failed, attempts, error, data)
                        SELECT %s, n, true, 3, 'ValueError: poison',
                               jsonb_build_object('id', n::text, 'name', repeat('x', 1000), 'poison', 'yes')
                        FROM generate_series(1, %s) AS n""", (upload_id, ROWS))


def _reader_of_nothing(url: str, path: str) -> socket.socket:
    """A client that asks for `path` and then reads nothing, with a small receive buffer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _head(sock: socket.socket) -> str:
    """The status line and headers of the answer a reader got, read at last."""
    sock.settimeout(20)
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
        answer += chunk
    return answer.split(b"\r\n\r\n", 1)[0].decode()


def test_ten_clients_reading_nothing_of_a_large_download_hold_neither_uploads_nor_readyz(
        queue_name: str, ledger_database: str, capfd: pytest.CaptureFixture[str]) -> None:
    with producer(queue_name, DOWNLOAD_CONNECTIONS="2", DOWNLOAD_TIMEOUT_SECONDS="3") as (url, _):
        upload_id = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")},
                               timeout=30).json()["upload_id"]
        _record_failed_rows(ledger_database, upload_id)
        readers = [_reader_of_nothing(url, f"/uploads/{upload_id}/failed") for _ in range(READERS)]
        time.sleep(1.0)  # two of them hold both download connections, their sockets full
        started = time.perf_counter()
        ready = httpx.get(f"{url}/readyz", timeout=5)
        uploaded = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")}, timeout=5)
        status = httpx.get(f"{url}/uploads/{upload_id}", timeout=5)
        seconds = time.perf_counter() - started
        time.sleep(8.0)  # past two timeouts: readers ended, waiting ones refused or served and ended in turn
        heads = [_head(reader) for reader in readers]
        for reader in readers:
            reader.close()
        whole = httpx.get(f"{url}/uploads/{upload_id}/failed", timeout=30)
    assert (ready.status_code, uploaded.status_code, status.status_code) == (200, 200, 200), uploaded.text
    assert seconds < 1.0, seconds
    statuses = [head.split("\r\n", 1)[0] for head in heads]
    assert set(statuses) == {"HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable"}, statuses
    assert all("retry-after: 5" in head for head in heads if " 503 " in head), heads
    assert whole.status_code == 200 and len(whole.text.splitlines()) == ROWS + 1
    log = capfd.readouterr().out
    assert log.count("failed-rows download ended, its client took nothing") >= 2, log[-3000:]
