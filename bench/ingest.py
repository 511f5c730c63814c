"""Ingest: rows per second through POST /upload, against bare pika in the same run.

- ceiling: the same messages, already built, published by pika without confirms, to a
  queue declared as the producer declares an upload's and to a default classic queue; the faster
  of the two is the ceiling (here the default queue takes unconfirmed messages faster);
- naive: pika's BlockingConnection in confirm mode, one basic_publish (and wait) per row;
- PerfTest: RabbitMQ's own tool publishing as many messages of our size with confirms, as many in
  flight as the producer's PUBLISH_WINDOW: `ingest_vs_perftest` is the producer over it, the
  median of support.ROUNDS rounds taken by turns (`ingest_vs_perftest_rounds` lists them).
"""

import time
import uuid

from bench import perftest, support
from producer.settings import Settings
from tests.helpers.producer import producer, upload


def _bare_publish(messages: list, queue: str, *, confirm: bool, as_producer: bool = True) -> float:
    """Rows per second publishing `messages` on one channel."""
    support.broker.delete_queue(queue)
    with support.broker.connection() as conn:
        channel = conn.channel()
        if as_producer:
            target = support.broker.declare_upload(channel, queue, uuid.uuid4().hex)
        else:
            target = queue
            channel.queue_declare(queue, durable=True)
        if confirm:
            channel.confirm_delivery()
        started = time.perf_counter()
        for body, properties in messages:
            channel.basic_publish("", target, body, properties)
        conn.process_data_events(0)  # flush what pika still buffers
        elapsed = time.perf_counter() - started
        channel.queue_delete(target)
    support.broker.delete_queue(queue)
    return len(messages) / elapsed


def run(rows: int = 200_000, naive_rows: int = 20_000) -> dict[str, object]:
    path = support.sample_csv(rows)
    queue = "bench-ingest"
    messages = support.encoded_messages(path)
    ceiling = max(
        _bare_publish(messages, queue, confirm=False),
        _bare_publish(messages, queue, confirm=False, as_producer=False),
    )
    with producer(queue) as (url, _pid):

        def producer_rate() -> float:
            seconds, result = upload(url, path)
            assert result["rows"] == rows and support.broker.backlog(queue) == rows, "the upload lost rows"
            support.broker.delete_queue(queue)
            return rows / seconds

        compared = support.against_yardstick(producer_rate, lambda: perftest.publish_confirms(
            rows, size=perftest.message_size(), window=Settings().publish_window))
    with producer(queue, KUBEJOB_PIKA_FAST="false") as (url, _pid):  # pika's public calls alone
        seconds, result = upload(url, path)
        assert result["rows"] == rows and support.broker.backlog(queue) == rows, "the upload lost rows"
        support.broker.delete_queue(queue)
        plain = rows / seconds
    naive = _bare_publish(messages[:naive_rows], queue, confirm=True)
    return {
        "ingest_rows_per_s": round(compared.ours),
        "ingest_ceiling_rows_per_s": round(ceiling),
        "ingest_ratio": round(compared.ours / ceiling, 3),
        "ingest_plain_pika_rows_per_s": round(plain),
        "ingest_fast_over_plain_pika": round(compared.ours / plain, 3),
        "naive_confirm_rows_per_s": round(naive),
        "perftest_publish_confirms_msgs_per_s": round(compared.yardstick),
        "ingest_vs_perftest": round(compared.ratio, 3),
        "ingest_vs_perftest_rounds": [round(ratio, 3) for ratio in compared.ratios],
    }
