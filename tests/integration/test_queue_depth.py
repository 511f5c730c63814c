"""The management API client against the real broker: counts, a queue not declared, a refused login.

The answers a healthy broker never gives (a 500, a timeout, a 200 without counts) are in
tests/unit/test_queue_depth.py, through httpx.MockTransport.
"""

import contextlib
import time

import pytest

from scaler.queue_counts import EMPTY, QueueCounts, QueueReadError
from scaler.queue_depth import ManagementClient
from tests.helpers import free_port

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


def test_unreachable_server_is_our_error(broker):
    nothing_there = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(QueueReadError, match="unreachable"):
        client(broker, "rows", base_url=nothing_there, timeout_s=1.0).read()
