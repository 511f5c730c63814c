"""The management API client against the real broker: a family's unacked counts, none, a refused login.

The answers a healthy broker never gives (a 500, a timeout, a 200 without counts) are in
tests/unit/test_queue_depth.py, through httpx.MockTransport.
"""

import pytest

from kubejob import message
from scaler.queue_counts import QueueReadError
from scaler.queue_depth import ManagementClient
from tests.helpers import free_port, wait_for
from tests.helpers.broker import Broker, rows

# The management API refreshes its counts every statistics interval (5 s by default), a new quorum queue's first
# ones after seconds more.
STATS_WAIT_S = 30


def client(broker: Broker, *, base_url: str | None = None, password: str | None = None,
           timeout_s: float = 5.0) -> ManagementClient:
    return ManagementClient(base_url=base_url or broker.management_url, user=broker.user,
                            password=password or broker.password, vhost="/", timeout_s=timeout_s)


def test_one_listing_gives_the_unacked_of_every_queue_of_the_family_and_only_those(broker: Broker,
                                                                                   queue_name: str) -> None:
    held, idle = (broker.publish_rows(queue_name, rows(7)) for _ in range(2))
    broker.publish_rows(f"{queue_name}x", rows(1))  # another family, whose name starts with this one's
    reader = client(broker)
    family = message.upload_queue(queue_name, "")
    expected = {message.upload_queue(queue_name, held): 2, message.upload_queue(queue_name, idle): 0}
    try:
        with broker.connection() as conn:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=2)
            channel.basic_consume(message.upload_queue(queue_name, held), lambda *_: None)

            def listed():
                conn.process_data_events(time_limit=0.2)
                return reader.unacked(family) == expected
            wait_for(listed, what=f"the listing to be {expected}", timeout=STATS_WAIT_S, interval=0.2)
    finally:
        broker.delete_queue(f"{queue_name}x")


def test_a_family_without_queues_is_an_empty_listing(broker: Broker, queue_name: str) -> None:
    assert client(broker).unacked(message.upload_queue(queue_name, "")) == {}


def test_wrong_password_names_401_and_hides_the_password(broker: Broker, queue_name: str) -> None:
    secret = "not-the-password-5f3a"
    with pytest.raises(QueueReadError) as caught:
        client(broker, password=secret).unacked(message.upload_queue(queue_name, ""))
    assert caught.value.status == 401
    assert "401" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


def test_unreachable_server_is_our_error(broker: Broker) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(QueueReadError, match="unreachable"):
        client(broker, base_url=nothing_there, timeout_s=1.0).unacked("rows.upload.")
