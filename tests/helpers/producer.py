"""`python -m producer` as a child process, for tests and benchmarks that need the real server."""

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.helpers import REPO_ROOT, answers, die_with_parent, free_port, wait_for


@contextlib.contextmanager
def producer(queue: str, **settings: str) -> Iterator[tuple[str, int]]:
    """A real producer publishing to `queue`, answering on its health endpoint; yields (base URL, pid).

    It serves no metrics unless `settings` gives it a PRODUCER_METRICS_PORT: the default port is one per host.
    """
    port = free_port()
    env = os.environ | {"QUEUE_NAME": queue, "PRODUCER_PORT": str(port), "PRODUCER_METRICS_PORT": "0",
                        "LOG_LEVEL": "WARNING"} | settings
    process = subprocess.Popen([sys.executable, "-m", "producer"], cwd=REPO_ROOT, env=env, preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/healthz"), what="the producer to answer", timeout=30, interval=0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


class StreamedUpload:
    """A POST /upload whose body (a multipart form of `size` bytes, or of the file at `path`) is sent over a raw
    socket as fast as the server takes it, until the server answers; says when, and how much of the body it had
    taken. Unlike an HTTP client, it hears an answer that comes while the body is still going out."""

    BOUNDARY = "b"
    HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n").encode()
    TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()

    def __init__(self, url: str, *, size: int = 0, path: Path | None = None, token: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.file = open(path, "rb") if path else None  # noqa: SIM115 - closed by close()
        if path:
            size = len(self.HEAD) + path.stat().st_size + len(self.TAIL)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall((f"POST /upload HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {size}\r\n"
                           f"Content-Type: multipart/form-data; boundary={self.BOUNDARY}\r\n\r\n").encode())
        self.size, self.sent, self.started = size, 0, time.perf_counter()

    def _body(self, chunk: int) -> Iterator[bytes]:
        if self.file is None:  # a form whose file is `size` bytes of x, never held whole
            yield self.HEAD.ljust(chunk, b"x")[: self.size]
            while True:
                yield b"x" * chunk
        else:
            yield self.HEAD
            while data := self.file.read(chunk):
                yield data
            yield self.TAIL

    def send_until_answered(self, *, timeout: float, chunk: int = 1 << 16) -> tuple[str, float]:
        """The response's status line ("" if none came) and seconds from the first byte sent to it."""
        self.sock.setblocking(False)
        body, pending = self._body(chunk), b""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            writing = [self.sock] if self.sent < self.size else []
            readable, writable, _ = select.select([self.sock], writing, [], 0.05)
            if readable:
                try:
                    answer = self.sock.recv(65536).decode(errors="replace")
                except OSError:
                    answer = ""
                return answer.split("\r\n", 1)[0], time.perf_counter() - self.started
            if writable:
                pending = pending or next(body)[: self.size - self.sent]
                try:
                    sent = self.sock.send(pending)
                except OSError:
                    continue  # the server closed its side; its answer may still be readable
                self.sent, pending = self.sent + sent, pending[sent:]
        return "", time.perf_counter() - self.started

    def close(self) -> None:
        self.sock.close()
        if self.file:
            self.file.close()


def csv_file(rows: int, poison: frozenset[int] = frozenset()) -> bytes:
    """A CSV of `rows` rows (id, name, poison); the rows numbered in `poison` fail handlers.fail_poison."""
    lines = ["id,name,poison"] + [f"{i},name {i},{'yes' if i in poison else 'no'}" for i in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def upload(url: str, path: Path) -> tuple[float, dict]:
    """POST the file (streamed from disk); return seconds to the 2xx and its JSON."""
    with open(path, "rb") as f:
        started = time.perf_counter()
        response = httpx.post(f"{url}/upload", files={"file": (path.name, f, "text/csv")}, timeout=None)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()
