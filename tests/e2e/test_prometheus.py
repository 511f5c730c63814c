"""A real Prometheus scrapes the real producer and worker and answers PromQL for what they did.

Outside a cluster there is no ServiceMonitor to discover them, so each is a static target; the
names, labels and values Prometheus stores are the ones the dashboard queries.
"""

import httpx

from tests.helpers import free_port, wait_for
from tests.helpers.producer import csv_file, producer
from tests.helpers.prometheus import prometheus, query
from tests.helpers.worker import start_worker

ROWS, POISON = 300, frozenset({5, 150})


def test_prometheus_counts_the_rows_an_upload_published_and_the_workers_handled(queue_name, tmp_path):
    producer_port, worker_port = free_port(), free_port()
    with producer(queue_name, PRODUCER_METRICS_PORT=str(producer_port)) as (url, _pid):
        targets = {"producer": f"127.0.0.1:{producer_port}", "worker": f"127.0.0.1:{worker_port}"}
        with prometheus(tmp_path, targets) as server:
            response = httpx.post(f"{url}/upload", files={"file": ("p.csv", csv_file(ROWS, POISON), "text/csv")},
                                  timeout=60)
            assert response.status_code == 200, response.text
            # Idle long enough after the drain for a last scrape, then stopped by the test.
            worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="1",
                                  WORKER_METRICS_PORT=str(worker_port), WORKER_IDLE_SECONDS="60")
            try:
                handled = 'sum(kubejob_worker_rows_total{outcome=~"done|dead_lettered"})'
                answers(server, handled, ROWS, timeout=60)
                # Asked while the worker runs: once its target is gone, its series go stale.
                answers(server, 'sum(kubejob_worker_rows_total{outcome="done"})', ROWS - len(POISON))
                answers(server, 'sum(kubejob_worker_rows_total{outcome="dead_lettered"})', len(POISON))
            finally:
                worker.terminate()
                worker.wait(timeout=30)
            answers(server, "kubejob_producer_rows_published_total", ROWS)
            answers(server, 'kubejob_producer_uploads_total{code="200"}', 1)
            answers(server, "kubejob_producer_ledger_up", 1)  # the scrape read the ledger


def answers(server: str, promql: str, expected: int, timeout: float = 15) -> None:
    """`promql` comes to `expected`: waited for, since a scrape that times out on a busy machine (the interval,
    and so the timeout, is 1 s) leaves the series stale, and without an answer, until the next one."""
    wait_for(lambda: query(server, promql) == expected, what=f"Prometheus to answer {promql} with {expected}",
             timeout=timeout)
