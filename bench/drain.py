"""Drain: one worker's messages per second with a no-op handler, against bare pika in the same run.

The ceiling is a bare pika consumer acking each message by hand at a large prefetch.
"""

import time

import pika

from bench import support
from worker.consumer import Consumer
from worker.handlers import noop
from worker.settings import Settings


def _fill(queue: str, messages: list) -> None:
    support.broker.delete_queue(queue)
    with support.broker.connection() as conn:
        channel = conn.channel()
        support.broker.declare(channel, queue)
        for body, properties in messages:
            channel.basic_publish("", queue, body, properties)
    while support.broker.depth(queue) < len(messages):
        time.sleep(0.1)


def _bare_consume(queue: str, count: int, prefetch: int) -> float:
    with support.broker.connection() as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=prefetch)
        seen = 0

        def on_message(ch: pika.channel.Channel, method: pika.spec.Basic.Deliver, _props: object, _body: bytes) -> None:
            nonlocal seen
            ch.basic_ack(method.delivery_tag)
            seen += 1
            if seen == count:
                ch.stop_consuming()

        channel.basic_consume(queue, on_message)
        started = time.perf_counter()
        channel.start_consuming()
        return count / (time.perf_counter() - started)


def _worker(queue: str, count: int, prefetch: int) -> float:
    idle = 0.5
    consumer = Consumer(Settings(queue_name=queue, worker_prefetch=prefetch, worker_idle_seconds=idle), noop)
    started = time.perf_counter()
    consumer.run()
    elapsed = time.perf_counter() - started - idle
    assert consumer.handled == count, f"the worker handled {consumer.handled} of {count}"
    return count / elapsed


def run(messages: int = 100_000, prefetch: int = 1000) -> dict[str, float]:
    queue = "bench-drain"
    batch = support.encoded_messages(support.sample_csv(messages))
    _fill(queue, batch)
    ceiling = _bare_consume(queue, messages, prefetch)
    _fill(queue, batch)
    drain = _worker(queue, messages, prefetch)
    support.broker.delete_queue(queue)
    return {
        "drain_msgs_per_s": round(drain),
        "drain_ceiling_msgs_per_s": round(ceiling),
        "drain_ratio": round(drain / ceiling, 3),
    }
