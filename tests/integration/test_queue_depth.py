"""The management API client against the real broker, and against local servers that fail."""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scaler.queue_depth import EMPTY, ManagementClient, QueueCounts, QueueReadError, StatsNotReady

# The management API refreshes its counts every statistics interval (5 s by default).
STATS_WAIT_S = 20


def client(broker, queue, *, base_url=None, password=None, timeout_s=5.0):
    return ManagementClient(
        base_url=base_url or broker.management_url, user=broker.user,
        password=password or broker.password, vhost="/", queue=queue, timeout_s=timeout_s,
    )


def wait_for_counts(reader: ManagementClient, expected: QueueCounts) -> QueueCounts:
    deadline, seen = time.monotonic() + STATS_WAIT_S, None
    while time.monotonic() < deadline:
        with contextlib.suppress(QueueReadError):  # a new queue has no counts for a moment
            seen = reader.read()
            if seen == expected:
                return seen
        time.sleep(0.25)
    pytest.fail(f"counts never became {expected} within {STATS_WAIT_S}s; last {seen}")


def test_declared_queue_reports_ready_unacked_and_consumers(broker, queue_name):
    with broker.connection() as conn:
        channel = conn.channel()
        channel.queue_declare(queue_name)
        for n in range(7):
            channel.basic_publish("", queue_name, str(n).encode())
        reader = client(broker, queue_name)
        wait_for_counts(reader, QueueCounts(7, 7, 0, 0))
        # A consumer holding 2 unacked messages: depth stays 7, like KEDA's default mode.
        channel.basic_qos(prefetch_count=2)
        channel.basic_consume(queue_name, lambda *args: None)
        conn.process_data_events(time_limit=0.5)
        wait_for_counts(reader, QueueCounts(7, 5, 2, 1))


def test_undeclared_queue_is_depth_zero(broker, queue_name):
    assert client(broker, queue_name).read() == EMPTY


def test_wrong_password_names_401_and_hides_the_password(broker, queue_name):
    secret = "not-the-password-5f3a"
    with pytest.raises(QueueReadError) as caught:
        client(broker, queue_name, password=secret).read()
    assert caught.value.status == 401
    assert "401" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


class _Answer(BaseHTTPRequestHandler):
    status, body, delay_s = 200, b"{}", 0.0

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        time.sleep(self.delay_s)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def local_server(**answer):
    handler = type("Handler", (_Answer,), answer)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


COUNTS = {"messages": 3, "messages_ready": 2, "messages_unacknowledged": 1, "consumers": 1}


def test_local_server_with_counts_is_read(broker):
    # The control for the failure cases below: the same server shape, answering properly.
    with local_server(body=json.dumps(COUNTS).encode()) as url:
        assert client(broker, "rows", base_url=url).read() == QueueCounts(3, 2, 1, 1)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_is_our_error(broker, status):
    with local_server(status=status, body=b'{"error":"boom"}') as url:
        with pytest.raises(QueueReadError, match=str(status)) as caught:
            client(broker, "rows", base_url=url).read()
    assert caught.value.status == status


def test_slow_server_times_out_as_our_error(broker):
    with local_server(delay_s=3.0, body=json.dumps(COUNTS).encode()) as url:
        started = time.monotonic()
        with pytest.raises(QueueReadError, match="timed out"):
            client(broker, "rows", base_url=url, timeout_s=0.3).read()
    assert time.monotonic() - started < 2.0


def test_unreachable_server_is_our_error(broker):
    with local_server() as url:
        pass  # closed again: nothing listens on that port now
    with pytest.raises(QueueReadError, match="unreachable"):
        client(broker, "rows", base_url=url, timeout_s=1.0).read()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        json.dumps({**COUNTS, "messages": None}).encode(),
        json.dumps({k: v for k, v in COUNTS.items() if k != "consumers"}).encode(),
        json.dumps({**COUNTS, "messages": "3"}).encode(),
    ],
    ids=["empty object", "null messages", "no consumers", "string count"],
)
def test_200_without_counts_is_stats_not_ready_not_zero(broker, body):
    with local_server(body=body) as url:
        with pytest.raises(StatsNotReady):
            client(broker, "rows", base_url=url).read()


@pytest.mark.parametrize("body", [b"[]", b"<html>not json</html>"], ids=["list", "not json"])
def test_200_that_is_not_a_queue_is_an_error(broker, body):
    with local_server(body=body) as url:
        with pytest.raises(QueueReadError) as caught:
            client(broker, "rows", base_url=url).read()
    assert not isinstance(caught.value, StatsNotReady)


def test_404_not_from_rabbitmq_is_an_error_not_zero(broker):
    with local_server(status=404, body=b"<html>no such path</html>") as url:
        with pytest.raises(QueueReadError, match="404"):
            client(broker, "rows", base_url=url).read()
