"""Status polling: an upload's rows/s alone, and while 20 clients poll its status at 10 Hz each.

The upload's publishing runs on the producer's event loop, beside the status routes: what the
polls cost the producer is taken from the upload. Alone and polled take turns support.ROUNDS
times; `status_polling_upload_rate_ratio` is the median of the rounds' rate polled over rate
alone (the target is at least 0.9). Also the polls' latency (p50, p99) and the producer's CPU
seconds per poll (its CPU polled less its CPU alone, over the polls).
"""

import asyncio
import json
import re
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench import support
from tests.helpers.producer import producer, upload

POLLERS, HERTZ, ROWS = 20, 10.0, 300_000


class Pollers:
    """POLLERS clients, each on a connection of its own, reading GET /uploads/{id} HERTZ times a second.

    The upload's id comes only with its answer: until the list shows it, they read the newest
    upload of the list instead, at the same pace, and then that upload by its id. In life the
    clients are other machines; here they share the cores, so each is a bare HTTP/1.1 exchange
    (httpx cost the machine more than the producer's answers).
    """

    def __init__(self, url: str, *, before: str) -> None:
        self.url, self.before, self.upload_id = url, before, ""
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._all()), daemon=True)

    def __enter__(self) -> "Pollers":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _all(self) -> None:
        await asyncio.gather(*(self._one(n / (POLLERS * HERTZ)) for n in range(POLLERS)))

    async def _one(self, offset: float) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        due = time.perf_counter() + offset  # spread over the interval, as independent clients would be
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            path = f"/uploads/{self.upload_id}" if self.upload_id else "/uploads?limit=1"
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            assert head.startswith(b"HTTP/1.1 200 ") and length, head
            body = await reader.readexactly(int(length[1]))
            self.latencies.append(time.perf_counter() - started)
            if not self.upload_id:
                newest = json.loads(body)["uploads"]
                self.upload_id = newest[0]["upload_id"] if newest and newest[0]["upload_id"] != self.before else ""
            due += 1 / HERTZ
        writer.close()


def _timed_upload(url: str, path: Path, pid: int, queue: str) -> tuple[float, float, str]:
    """Rows per second, the producer's CPU seconds meanwhile, and the upload's id."""
    process = psutil.Process(pid)
    cpu = process.cpu_times()
    seconds, result = upload(url, path)
    spent = process.cpu_times()
    assert result["rows"] == ROWS and support.broker.backlog(queue) == ROWS, "the upload lost rows"
    support.broker.delete_queue(queue)  # so that the queue does not grow from round to round
    return ROWS / seconds, (spent.user + spent.system) - (cpu.user + cpu.system), result["upload_id"]


def run() -> dict[str, object]:
    path = support.sample_csv(ROWS)
    queue = "bench-status-polling"
    latencies: list[float] = []
    cpu_s: dict[str, list[float]] = {"alone": [], "polled": []}
    polled_s = 0.0
    with producer(queue) as (url, pid):

        def alone() -> float:
            rate, cpu, _ = _timed_upload(url, path, pid, queue)
            cpu_s["alone"].append(cpu)
            return rate

        def polled() -> float:
            nonlocal polled_s
            newest = httpx.get(f"{url}/uploads?limit=1").raise_for_status().json()["uploads"]
            with Pollers(url, before=newest[0]["upload_id"] if newest else "") as pollers:
                rate, cpu, upload_id = _timed_upload(url, path, pid, queue)
            assert pollers.upload_id == upload_id, "the pollers did not find the upload"
            latencies.extend(pollers.latencies)
            cpu_s["polled"].append(cpu)
            polled_s += ROWS / rate
            return rate

        compared = support.against_yardstick(polled, alone)
    polls = len(latencies)
    extra_cpu_s = sum(cpu_s["polled"]) - sum(cpu_s["alone"])
    return {
        "status_polling_upload_rows_per_s_alone": round(compared.yardstick),
        "status_polling_upload_rows_per_s_polled": round(compared.ours),
        "status_polling_upload_rate_ratio": round(compared.ratio, 3),
        "status_polling_upload_rate_ratio_rounds": [round(ratio, 3) for ratio in compared.ratios],
        "status_polling_polls": polls,
        # Under POLLERS * HERTZ when a poll takes longer than 1 / HERTZ: a poller waits for its answer.
        "status_polling_polls_per_s": round(polls / polled_s),
        "status_polling_poll_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "status_polling_poll_p99_ms": round(statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1000, 1),
        "status_polling_producer_cpu_ms_per_poll": round(extra_cpu_s / polls * 1000, 3),
    }
