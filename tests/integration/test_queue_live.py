"""The scaler's backlog against the real broker and ledger: the served uploads' queues, read live.

A new backlog is seen at once, not a statistics interval later; a paused upload's rows do not
count; a queue deleted since the ledger listed it is 0 and the queues after it are still read.
"""

import time

import pytest

from kubejob import message
from scaler.queue_counts import QueueReadError
from scaler.queue_live import Live, LiveQueues
from tests.helpers import free_port, wait_for
from tests.helpers.backlog import backlog, cancel, parameters, pause
from tests.helpers.broker import Broker, rows
from tests.helpers.tcp_proxy import TcpProxy


def test_an_undeclared_queue_reads_empty(broker: Broker, queue_name: str) -> None:
    reader = LiveQueues(parameters=parameters(broker), timeout_s=2)
    assert reader.read([queue_name]) == {}
    assert reader.read([queue_name, message.limit_queue(queue_name)]) == {}  # the channel closed by a 404 is not reused
    reader.close()


def test_no_open_upload_is_an_empty_backlog(broker: Broker, queue_name: str) -> None:
    counts = backlog(broker, queue_name).read()
    assert (counts.messages, counts.uploads, counts.queues) == (0, 0, 1)  # the limit queue alone


def test_two_uploads_are_summed_and_a_new_backlog_is_seen_by_the_next_read(broker: Broker, queue_name: str) -> None:
    reader = backlog(broker, queue_name)
    broker.publish_rows(queue_name, rows(30))
    # No waiting: the management API alone would not have counted the new queue yet.
    assert reader.read().messages == 30
    broker.publish_rows(queue_name, rows(45), tenant="another")
    counts = reader.read()
    assert (counts.messages, counts.messages_ready, counts.consumers) == (75, 75, 0)
    assert (counts.uploads, counts.queues, counts.paused_uploads) == (2, 3, 0)
    reader.close()


def test_a_paused_upload_is_left_out_and_its_rows_stay(broker: Broker, queue_name: str) -> None:
    paused = broker.publish_rows(queue_name, rows(30))
    broker.publish_rows(queue_name, rows(45))
    reader = backlog(broker, queue_name)
    pause(paused)
    counts = reader.read()
    assert (counts.messages, counts.uploads, counts.paused_uploads, counts.queues) == (45, 1, 1, 2)
    assert broker.backlog(queue_name) == 75  # untouched, for when it is resumed


def test_a_backlog_all_paused_or_cancelled_is_empty(broker: Broker, queue_name: str) -> None:
    first, second = (broker.publish_rows(queue_name, rows(n)) for n in (30, 700))
    pause(first)
    cancel(second)
    counts = backlog(broker, queue_name).read()
    assert (counts.messages, counts.uploads, counts.paused_uploads, counts.ended_uploads) == (0, 0, 1, 1)


def test_a_deleted_queue_counts_zero_and_the_queues_after_it_are_still_read(broker: Broker, queue_name: str) -> None:
    ids = [broker.publish_rows(queue_name, rows(count)) for count in (10, 20, 30, 40)]
    with broker.connection() as conn:
        channel = conn.channel()
        for gone in (ids[1], ids[2]):  # two in a row: each 404 closes the channel the next one is read on
            channel.queue_delete(message.upload_queue(queue_name, gone))
    reader = backlog(broker, queue_name)
    for _ in range(2):  # and the connection serves the next read
        counts = reader.read()
        assert (counts.messages, counts.uploads, counts.missing_queues) == (50, 4, 2)
    reader.close()


def test_the_live_read_names_each_queue_it_found(broker: Broker, queue_name: str) -> None:
    first, second = (broker.publish_rows(queue_name, rows(n)) for n in (3, 4))
    names = [message.upload_queue(queue_name, first), f"{queue_name}.gone", message.upload_queue(queue_name, second)]
    reader = LiveQueues(parameters=parameters(broker), timeout_s=2)
    assert reader.read(names) == {names[0]: Live(3, 0), names[2]: Live(4, 0)}
    reader.close()


def test_without_consumers_a_new_backlog_needs_no_management_api(broker: Broker, queue_name: str) -> None:
    upload = broker.publish_rows(queue_name, rows(30))
    # A management API that cannot answer: a queue without consumers has nothing unacked to ask it.
    reader = backlog(broker, queue_name, management_url=f"http://127.0.0.1:{free_port()}")
    counts = reader.read()
    assert (counts.messages, counts.consumers) == (30, 0)
    with broker.connection() as conn:
        conn.channel().basic_consume(message.upload_queue(queue_name, upload), lambda *_: None)
        conn.process_data_events(time_limit=0.5)
        with pytest.raises(QueueReadError, match="management API unreachable"):
            reader.read()
    reader.close()


def test_consumers_are_live_and_unacked_come_from_the_management_api(broker: Broker, queue_name: str) -> None:
    uploads = [broker.publish_rows(queue_name, rows(n)) for n in (10, 8)]
    reader = backlog(broker, queue_name)
    with broker.connection() as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=3)  # per consumer: 3 held from each queue
        for upload in uploads:
            channel.basic_consume(message.upload_queue(queue_name, upload), lambda *_: None)
        conn.process_data_events(time_limit=1)

        def held():  # unacked arrive with the statistics, a quorum queue's first ones after seconds
            conn.process_data_events(time_limit=0.1)
            counts = reader.read()
            return counts if counts.messages_unacknowledged == 6 else None
        counts = wait_for(held, what="6 unacked counted", timeout=30, interval=0.1)
        assert (counts.messages, counts.messages_ready, counts.consumers, counts.unacked_unknown) == (18, 12, 1, 0)
    reader.close()


def test_an_unreachable_broker_is_an_error_not_zero(broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, rows(1))
    with pytest.raises(QueueReadError, match="AMQP unreachable"):
        backlog(broker, queue_name, port=1).read()


@pytest.mark.parametrize("how", ["blackhole", "freeze"])
def test_a_silent_broker_costs_one_timeout_and_the_next_read_reconnects(
    broker: Broker, queue_name: str, how: str
) -> None:
    """"freeze" silences the connection already open; "blackhole" answers no new one."""
    broker.publish_rows(queue_name, rows(25))
    proxy = TcpProxy(broker.port)
    reader = backlog(broker, queue_name, port=proxy.port)
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
    upload = broker.publish_rows(queue_name, rows(5))
    # As the broker puts them there: only a worker records them in the ledger and moves them on.
    with broker.connection() as conn:
        channel = conn.channel()
        for n in range(3):
            channel.basic_publish("", message.limit_queue(queue_name), f'{{"id": "{n}"}}'.encode())
    reader = backlog(broker, queue_name)
    counts = reader.read()
    assert (counts.messages, counts.messages_ready) == (8, 8)
    broker.drain(message.upload_queue(queue_name, upload))
    assert reader.read().messages == 3  # the limit queue alone still wants a worker
    reader.close()
