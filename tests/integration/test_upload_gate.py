"""The real producer refuses an upload from its headers alone: without the token, while RabbitMQ blocks
publishers, or past MAX_CONCURRENT_UPLOADS; /readyz says when the broker blocks."""

import socket
import time

import httpx

from tests.helpers import wait_for
from tests.helpers.producer import StreamedUpload, csv_file, curl_upload, producer
from tests.helpers.rabbitmq_server import DockerRabbitmq

GIGABYTE = 1 << 30


def test_an_unauthenticated_1gb_upload_is_refused_within_a_second_having_read_almost_nothing(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret") as (url, _):
        request = StreamedUpload(url, size=GIGABYTE)
        status, seconds = request.send_until_answered(timeout=10)
        request.close()
    assert status == "HTTP/1.1 401 Unauthorized"
    assert seconds < 1.0
    # What the kernel's socket buffers took before the answer came, nothing like the gigabyte.
    assert request.sent < 16 << 20, request.sent


def _refused_then_healthz(url: str, *, size: int, token: str = "wrong") -> bytes:
    """A POST /upload with a `size`-byte file sent whole, then GET /healthz on the same connection; what came back
    until the server closed. Raises ConnectionResetError if the connection was reset."""
    body = StreamedUpload.HEAD + b"x" * size + StreamedUpload.TAIL
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\nContent-Length: %d\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n%b" % (token.encode(), len(body), body))
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = b""
        while chunk := conn.recv(65536):
            answers += chunk
    return answers


def test_a_refused_1mb_upload_is_read_to_its_end_and_its_connection_goes_on(queue_name: str) -> None:
    # Left unread, its bytes would reset the connection on close: `kubectl port-forward` dies of that.
    with producer(queue_name, UPLOAD_TOKEN="s3cret") as (url, _):
        answers = _refused_then_healthz(url, size=1_000_000)
    assert answers.startswith(b"HTTP/1.1 401 Unauthorized"), answers
    assert answers.count(b"HTTP/1.1 200 OK") == 1, answers


def test_an_upload_over_the_size_limit_gets_413_and_its_connection_goes_on(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret", MAX_UPLOAD_BYTES="600000") as (url, _):
        # Read to 600 kB, refused, and its last 400 kB dropped: within the MAX_UPLOAD_BYTES dropped after a refusal.
        answers = _refused_then_healthz(url, size=1_000_000, token="s3cret")
    assert answers.startswith(b"HTTP/1.1 413 Request Entity Too Large"), answers
    assert answers.count(b"HTTP/1.1 200 OK") == 1, answers


def test_a_refused_upload_that_expects_100_continue_is_answered_and_closed_without_its_body(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret") as (url, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3000000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):  # the server's close: an end of stream, not a reset
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized"), answer
    assert b"100 Continue" not in answer and b"connection: close" in answer.lower(), answer


def test_curl_is_refused_with_401_for_a_small_and_a_large_file_and_then_uploads(queue_name: str, tmp_path) -> None:
    # curl sends `Expect: 100-continue` for a body over 1 MiB only.
    small, large, good = tmp_path / "small.csv", tmp_path / "large.csv", tmp_path / "good.csv"
    small.write_bytes(b"a\n" + b"x" * 1_000_000 + b"\n")
    large.write_bytes(b"a\n" + b"x" * 3_000_000 + b"\n")
    good.write_bytes(csv_file(3))
    with producer(queue_name, UPLOAD_TOKEN="s3cret") as (url, _):
        tries = ((small, "wrong"), (large, "wrong"), (good, "s3cret"))
        codes = [curl_upload(url, path, token=token) for path, token in tries]
    assert codes == ["401", "401", "200"]


def test_an_upload_past_the_limit_gets_429_at_once_with_retry_after(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret", MAX_CONCURRENT_UPLOADS="1") as (url, _):
        first = StreamedUpload(url, size=GIGABYTE, token="s3cret")
        assert first.send_until_answered(timeout=0.5)[0] == "", "the first upload should still be streaming in"
        started = time.perf_counter()
        second = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")},
                            headers={"Authorization": "Bearer s3cret"}, timeout=10)
        seconds = time.perf_counter() - started
        first.close()
    assert second.status_code == 429 and second.headers["retry-after"] == "5"
    assert "MAX_CONCURRENT_UPLOADS" in second.json()["error"]
    assert seconds < 0.5


def readiness(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    status = httpx.get(f"{url}/readyz", timeout=5).status_code
    return status, time.perf_counter() - started


def test_a_memory_alarm_makes_readyz_503_and_uploads_fail_at_once_until_it_clears(
        rabbitmq_4: DockerRabbitmq, queue_name: str) -> None:
    # The session's own broker: an alarm on the shared one would block every other test's publishers.
    with producer(queue_name, **rabbitmq_4.environment()) as (url, _):
        wait_for(lambda: readiness(url)[0] == 200, what="the producer to be ready", timeout=30, interval=0.2)
        rabbitmq_4.rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
        alarm = time.perf_counter()
        try:
            wait_for(lambda: readiness(url)[0] == 503, what="/readyz to see the alarm", timeout=10, interval=0.2)
            noticed = time.perf_counter() - alarm
            status, probe = readiness(url)
            started = time.perf_counter()
            upload = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")}, timeout=30)
            refused = time.perf_counter() - started
        finally:
            rabbitmq_4.rabbitmqctl("set_vm_memory_high_watermark", "0.6")
        cleared = time.perf_counter()
        wait_for(lambda: readiness(url)[0] == 200, what="/readyz after the alarm", timeout=10, interval=0.2)
        recovered = time.perf_counter() - cleared
        after = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")}, timeout=30)
    # The watch publishes every PROBE_SECONDS (2 s); the broker says it blocks on the next publish.
    assert noticed < 3.0 and status == 503 and probe < 0.5, (noticed, status, probe)
    assert upload.status_code == 503 and refused < 1.0, (upload.status_code, refused)
    assert "RabbitMQ blocks publishers: low on memory" in upload.json()["error"], upload.json()
    assert upload.headers["retry-after"] == "5"
    assert recovered < 3.0
    assert after.status_code == 200 and rabbitmq_4.backlog(queue_name) == 3, after.text
