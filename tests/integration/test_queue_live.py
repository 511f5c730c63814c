"""LiveQueue against the real broker: a new backlog is seen at once, not a statistics interval later."""

import time

import pika
import pytest

from kubejob.message import limit_queue
from scaler.queue_counts import QueueReadError, StatsNotReady
from scaler.queue_depth import ManagementClient
from scaler.queue_live import LiveQueue
from tests.helpers import free_port
from tests.helpers.broker import Broker, rows
from tests.helpers.tcp_proxy import TcpProxy


def live(broker: Broker, queue: str, *, port: int | None = None, management_url: str | None = None) -> LiveQueue:
    management = ManagementClient(base_url=management_url or broker.management_url, user=broker.user,
                                  password=broker.password, vhost="/", queue=queue, timeout_s=5)
    parameters = pika.ConnectionParameters(host=broker.host, port=port or broker.port, connection_attempts=1,
                                           credentials=pika.PlainCredentials(broker.user, broker.password))
    return LiveQueue(management=management, parameters=parameters, queue=queue, timeout_s=2)


def test_an_undeclared_queue_reads_empty(broker: Broker, queue_name: str) -> None:
    reader = live(broker, queue_name)
    assert reader.read().messages == 0
    assert reader.read().messages == 0  # the channel closed by the 404 is not reused
    reader.close()


def test_a_new_backlog_is_seen_by_the_next_read(broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, rows(0))
    reader = live(broker, queue_name)
    for batch in (30, 45, 5):
        broker.publish_rows(queue_name, rows(batch))
        # No waiting: the management API alone would still report the old count here.
        counts = reader.read()
        assert (counts.messages_ready, counts.consumers) == (broker.depth(queue_name), 0)
    assert counts.messages == 80
    reader.close()


def test_without_consumers_a_new_backlog_needs_no_management_api(broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, rows(30))
    # A management API that cannot answer: a queue without consumers has nothing unacked to ask it.
    reader = live(broker, queue_name, management_url=f"http://127.0.0.1:{free_port()}")
    assert (reader.read().messages, reader.read().consumers) == (30, 0)
    with broker.connection() as conn:
        conn.channel().basic_consume(queue_name, lambda *_: None)
        conn.process_data_events(time_limit=0.5)
        with pytest.raises(QueueReadError, match="management API unreachable"):
            reader.read()
    reader.close()


def test_consumers_are_live_and_unacked_come_from_the_management_api(broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, rows(10))
    reader = live(broker, queue_name)
    with broker.connection() as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=3)
        channel.basic_consume(queue_name, lambda *_: None)
        conn.process_data_events(time_limit=1)
        for _ in range(300):  # unacked arrive with the statistics, a quorum queue's first ones after seconds
            try:
                counts = reader.read()
            except StatsNotReady:
                counts = None
            if counts and counts.messages_unacknowledged == 3:
                break
            conn.process_data_events(time_limit=0.1)
        assert counts is not None and counts.consumers == 1
        assert (counts.messages, counts.messages_ready, counts.messages_unacknowledged) == (10, 7, 3)
    reader.close()


def test_an_unreachable_broker_is_an_error_not_zero(broker: Broker, queue_name: str) -> None:
    reader = live(broker, queue_name, port=1)
    with pytest.raises(QueueReadError, match="AMQP unreachable"):
        reader.read()


@pytest.mark.parametrize("how", ["blackhole", "freeze"])
def test_a_silent_broker_costs_one_timeout_and_the_next_read_reconnects(
    broker: Broker, queue_name: str, how: str
) -> None:
    """"freeze" silences the connection already open; "blackhole" answers no new one."""
    broker.publish_rows(queue_name, rows(25))
    proxy = TcpProxy(broker.port)
    reader = live(broker, queue_name, port=proxy.port)
    assert reader.read().messages_ready == 25
    proxy.cut(how)
    began = time.monotonic()
    with pytest.raises(QueueReadError, match="AMQP"):
        reader.read()
    assert time.monotonic() - began < 2 + 1  # the reader's 2 s timeout, with room
    proxy.restore()
    assert reader.read().messages_ready == 25
    reader.close()
    proxy.close()


def test_rows_the_broker_dead_lettered_at_its_delivery_limit_count_as_backlog(broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, rows(5))
    # As the broker puts them there: only a worker records them in the ledger and moves them on.
    with broker.connection() as conn:
        channel = conn.channel()
        for n in range(3):
            channel.basic_publish("", limit_queue(queue_name), f'{{"id": "{n}"}}'.encode())
    reader = live(broker, queue_name)
    counts = reader.read()
    assert (counts.messages, counts.messages_ready) == (8, 8)
    broker.drain(queue_name)
    assert reader.read().messages == 3  # the limit queue alone still wants a worker
    reader.close()
