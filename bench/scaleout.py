"""Scale-out on the one-node cluster, 1 Job allowed and 4.

- Seconds to drain 100k rows end to end, no-op work: from the start of POST /upload until the
  queue is empty and every worker Job has finished.
- With an I/O-bound handler (worker.handlers.wait_20ms, WORKER_CONCURRENCY 32): 100k rows
  queued with the scaler scaled to 0, then the scaler started; the rows per second done while
  the upload went from 10 % to 90 % of its rows done, as its status tells, so that Job start
  and the tail do not count; 4 Jobs' rate over 4 times one Job's. The share of the machine's
  CPU busy over the same span says whether the machine, not the design, set the pace.

infra/k8s runs as shipped in a namespace of its own (only the settings named change), RabbitMQ
and PostgreSQL included; the upload goes through `kubectl port-forward` to the producer's Service.
"""

import time
from pathlib import Path

from bench import cluster, support
from kubejob.message import upload_queue
from scaler.jobs import is_finished
from tests.helpers.kube import KubeCluster, queue_depths, worker_jobs

IO_CONCURRENCY = 32


def _unfinished(kube: KubeCluster, namespace: str) -> int:
    return sum(1 for job in worker_jobs(kube, namespace) if not is_finished(job))


def _queued(kube: KubeCluster, namespace: str) -> int:
    """Rows in the uploads' queues of the deployment's QUEUE_NAME, `rows`."""
    return sum(n for name, n in queue_depths(kube, namespace).items() if name.startswith(upload_queue("rows", "")))


def _drain_seconds(kube: KubeCluster, path: Path, *, max_jobs: int) -> float:
    with cluster.deployed(kube, SCALER_MAX_JOBS=str(max_jobs)) as deployment:
        started = time.perf_counter()
        deployment.upload(path)
        while _queued(kube, deployment.namespace) or _unfinished(kube, deployment.namespace):
            time.sleep(0.5)
        return time.perf_counter() - started


def _io_rows_per_s(kube: KubeCluster, path: Path, *, max_jobs: int) -> tuple[float, float]:
    """Rows per second done and the machine's busy CPU share, both between 10 % and 90 % done."""
    with cluster.deployed(kube, SCALER_MAX_JOBS=str(max_jobs), WORKER_HANDLER="worker.handlers:wait_20ms",
                          WORKER_CONCURRENCY=str(IO_CONCURRENCY), SCALER_MESSAGES_PER_JOB="100") as deployment:
        # The backlog is queued in full before any Job starts, so that the rate is the Jobs' alone.
        deployment.scale_scaler(0)
        status_url = deployment.upload(path)
        deployment.scale_scaler(1)
        began, cpu = 0.0, None
        while True:
            status = deployment.status(status_url)
            if cpu is None and status["done"] >= 0.1 * status["rows"]:
                began, cpu = time.perf_counter(), support.MachineCpu()
            if cpu is not None and status["done"] >= 0.9 * status["rows"]:
                seconds = time.perf_counter() - began
                return 0.8 * status["rows"] / seconds, cpu.busy_share(seconds)
            time.sleep(0.2)


def run(rows: int = 100_000, io_rows: int = 100_000) -> dict[str, float]:
    path = support.sample_csv(rows)
    with cluster.node() as kube:
        one = _drain_seconds(kube, path, max_jobs=1)
        four = _drain_seconds(kube, path, max_jobs=4)
        io_one, busy_one = _io_rows_per_s(kube, support.sample_csv(io_rows), max_jobs=1)
        io_four, busy_four = _io_rows_per_s(kube, support.sample_csv(io_rows), max_jobs=4)
    return {"drain_100k_s_1_job": round(one, 1), "drain_100k_s_4_jobs": round(four, 1),
            "io_rows_per_s_1_job": round(io_one), "io_rows_per_s_4_jobs": round(io_four),
            "io_machine_cpu_busy_1_job": round(busy_one, 3), "io_machine_cpu_busy_4_jobs": round(busy_four, 3),
            "scaleout_efficiency_4_jobs": round(io_four / (4 * io_one), 3)}
