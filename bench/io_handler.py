"""I/O-bound handlers: one worker whose handler waits 20 ms per row, WORKER_CONCURRENCY 32, the shipped prefetch.

One row at a time that is 50 rows/s; 32 at once, ideally 1,600. The efficiency is the rows
per second measured over that ideal, for a function (threads) and for a coroutine (tasks on
an event loop), with the ledger recording every row as shipped. The CPU a row costs the
worker (all its threads) and the whole machine (RabbitMQ and PostgreSQL too) says what the
handlers' waiting costs, and so how many such workers a machine holds (`python -m bench scaleout`).
"""

import asyncio
import time

from bench import drain, support
from worker.handlers import WAIT_20MS_S, wait_20ms
from worker.settings import Settings

CONCURRENCY = 32
IDEAL = CONCURRENCY / WAIT_20MS_S


async def waits_async(_row: dict[str, str]) -> None:
    await asyncio.sleep(WAIT_20MS_S)


def run(rows: int = 16_000) -> dict[str, float]:
    queue = "bench-io"
    figures = {}
    sample = support.sample_rows(support.sample_csv(rows))
    for name, handler in (("io_handler", wait_20ms), ("io_handler_async", waits_async)):
        drain.fill(queue, sample)
        worker_cpu, machine_cpu = time.process_time(), support.MachineCpu()
        rate = drain.worker(queue, rows, prefetch=Settings().worker_prefetch, handler=handler, concurrency=CONCURRENCY)
        figures |= {f"{name}_rows_per_s": round(rate), f"{name}_efficiency": round(rate / IDEAL, 3),
                    f"{name}_cpu_us_per_row": round((time.process_time() - worker_cpu) / rows * 1e6),
                    f"{name}_machine_cpu_us_per_row": round(machine_cpu.busy_s() / rows * 1e6)}
    support.clean(queue)
    return figures
