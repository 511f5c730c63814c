"""Drain: one worker's messages per second with a no-op handler, against bare pika in the same run.

Each drain is of one upload recorded in the ledger, the only one into its queue name, so the
worker serves it alone with all its prefetch (`fill`). Every consumer here but PerfTest has the
worker's shipped WORKER_PREFETCH. The ceiling is a bare pika consumer acking each message by
hand. The worker drains twice: recording every row in the ledger as shipped, and with recording
left out, so `drain_ledger_ratio` is what the ledger costs.
The yardstick is RabbitMQ's PerfTest consuming as many messages of our size with manual acks,
prefetch 100, acking 100 at a time (multiple): `drain_vs_perftest` is the worker without the
ledger over it, the median of support.ROUNDS rounds taken by turns (`drain_vs_perftest_rounds`
lists them).
`drain_ledger_cpu_us_per_row` is the CPU the worker (all its threads) spent per row, as shipped:
the cost that the GIL serialises, so the figure to watch when making the drain faster.

`drain_failing` (a benchmark of its own) drains rows of which every other one fails for good
(WORKER_MAX_ATTEMPTS=1, so each is recorded and copied to "<queue>.dead"): its rows/s over a
clean drain's, both recorded in the ledger, by turns, is `drain_half_failing_ratio`.
"""

import collections
import functools
import time

import pika

from bench import perftest, support
from kubejob import message
from kubejob.errors import LedgerUnavailable
from kubejob.message import Delivery
from tests.helpers.ledger import finished
from worker.consumer import Consumer
from worker.handlers import Handler, noop
from worker.ledger import Ledger, RowOutcome
from worker.settings import Settings
from worker.settle import Outcome

FILL_ATTEMPTS = 3


class Unrecorded(Ledger):
    """The worker's ledger with its writes left out: the baseline the real one is measured against."""

    def record(self, outcomes: list[RowOutcome], *, redelivered: collections.Counter[str]) -> None:
        pass


def fill(queue: str, rows: list[dict[str, str]]) -> str:
    """A new upload of `rows`, the only one into `queue`, its own queue holding exactly its rows, published without
    confirms (confirming each is far slower); returns its id.

    Unconfirmed messages can be lost: RabbitMQ 3.10 dropped 2 of 100k sent to a quorum queue just
    declared again under the same name. When the depth stops short, a new upload is filled instead.
    """
    for _ in range(FILL_ATTEMPTS):
        support.clean(queue)
        upload_id = support.broker.publish_rows(queue, rows, confirm=False)
        target = message.upload_queue(queue, upload_id)
        depth = support.counted_in(len(rows), functools.partial(support.broker.depth, target))
        if depth == len(rows):
            return upload_id
        print(f"fill: RabbitMQ kept {depth} of {len(rows)} unconfirmed messages in {target}; filling again")
    raise RuntimeError(f"RabbitMQ kept fewer than the {len(rows)} messages sent to {queue}, {FILL_ATTEMPTS} times")


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


class Timed(Consumer):
    """The worker's consumer, noting when its first rows arrived and when its last were settled."""

    first_delivery = last_settled = 0.0

    def _on_deliveries(self, deliveries: list[Delivery]) -> None:
        self.first_delivery = self.first_delivery or time.perf_counter()
        super()._on_deliveries(deliveries)

    def _recorded(self, batch: list[Outcome], error: LedgerUnavailable | None) -> None:
        super()._recorded(batch, error)
        self.last_settled = time.perf_counter()


def worker(queue: str, count: int, prefetch: int, ledger_class: type[Ledger] = Ledger, handler: Handler = noop,
           concurrency: int = 1, max_attempts: int = 3, failing: int = 0, fast: bool = True) -> float:
    """Rows per second of one worker, in this process, draining `count` rows from `queue`.

    Timed from the first delivery to the last ack, as PerfTest times its consumer once it is
    connected: a worker's start (connecting, the ledger's migrations) and its wait of
    WORKER_IDLE_SECONDS before it exits are not draining. `failing` rows are expected to fail.
    """
    settings = Settings(queue_name=queue, worker_prefetch=prefetch, worker_idle_seconds=0.5,
                        worker_concurrency=concurrency, worker_max_attempts=max_attempts, kubejob_pika_fast=fast)
    ledger = ledger_class(settings.database_url.get_secret_value(), timeout_s=settings.database_timeout_seconds)
    ledger.open()
    consumer = Timed(settings, handler, ledger)
    try:
        consumer.run()
    finally:
        ledger.close()
    assert consumer.handled == count - failing, f"the worker handled {consumer.handled} of {count - failing}"
    return count / (consumer.last_settled - consumer.first_delivery)


def run(messages: int = 100_000) -> dict[str, object]:
    prefetch = Settings().worker_prefetch
    queue = "bench-drain"
    rows = support.sample_rows(support.sample_csv(messages))
    ceiling = _bare_consume(message.upload_queue(queue, fill(queue, rows)), messages, prefetch)

    def unrecorded_rate() -> float:
        fill(queue, rows)
        return worker(queue, messages, prefetch, Unrecorded)

    compared = support.against_yardstick(
        unrecorded_rate, lambda: perftest.consume_multi_ack(messages, size=perftest.message_size()))
    fill(queue, rows)
    plain = worker(queue, messages, prefetch, Unrecorded, fast=False)  # pika's public calls alone
    upload_id = fill(queue, rows)
    cpu = time.process_time()  # the worker's threads are all this process does meanwhile
    recorded = worker(queue, messages, prefetch, Ledger)
    cpu_us_per_row = (time.process_time() - cpu) / messages * 1e6
    assert finished(upload_id) == messages, "the ledger lost rows"
    support.clean(queue)
    return {
        "drain_msgs_per_s": round(compared.ours),
        "drain_ceiling_msgs_per_s": round(ceiling),
        "drain_ratio": round(compared.ours / ceiling, 3),
        "drain_plain_pika_msgs_per_s": round(plain),
        "drain_fast_over_plain_pika": round(compared.ours / plain, 3),
        "drain_ledger_msgs_per_s": round(recorded),
        "drain_ledger_ratio": round(recorded / compared.ours, 3),
        "drain_ledger_cpu_us_per_row": round(cpu_us_per_row, 1),
        "perftest_consume_multi_ack_msgs_per_s": round(compared.yardstick),
        "drain_vs_perftest": round(compared.ratio, 3),
        "drain_vs_perftest_rounds": [round(ratio, 3) for ratio in compared.ratios],
    }


def fail_even_ids(row: dict[str, str]) -> None:
    """Fails every other row, as a handler rejecting half its input would."""
    if int(row["id"]) % 2 == 0:
        raise ValueError(f"row {row['id']} has an even id")


def half_failing(messages: int = 100_000, rounds: int = support.ROUNDS) -> dict[str, object]:
    """A drain with every other row failing for good, over a clean drain, both recorded, by turns."""
    prefetch = Settings().worker_prefetch
    queue = "bench-drain-failing"
    rows = support.sample_rows(support.sample_csv(messages))
    failing = messages // 2

    def failing_rate() -> float:
        upload_id = fill(queue, rows)
        rate = worker(queue, messages, prefetch, handler=fail_even_ids, max_attempts=1, failing=failing)
        assert support.broker.depth(message.dead_letter_queue(queue)) == failing, "rows missing from .dead"
        assert finished(upload_id) == messages, "the ledger lost rows"
        return rate

    def clean_rate() -> float:
        upload_id = fill(queue, rows)
        rate = worker(queue, messages, prefetch)
        assert finished(upload_id) == messages, "the ledger lost rows"
        return rate

    compared = support.against_yardstick(failing_rate, clean_rate, rounds)
    support.clean(queue)
    return {
        "drain_half_failing_msgs_per_s": round(compared.ours),
        "drain_clean_msgs_per_s": round(compared.yardstick),
        "drain_half_failing_ratio": round(compared.ratio, 3),
        "drain_half_failing_ratio_rounds": [round(ratio, 3) for ratio in compared.ratios],
    }
