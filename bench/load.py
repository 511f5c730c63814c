"""Load: 8 concurrent 1M-row uploads while /readyz and /healthz are probed every second, as the kubelet would.

- probes: latency p50/p99/max of each; the max as a ratio of the probe's timeoutSeconds in
  infra/k8s/producer.yaml (under 1: the pod would have stayed in the Service and alive); how
  many took longer than that, the most in a row (the kubelet acts after failureThreshold in a
  row), and when into the load the slowest came;
- the uploads past MAX_CONCURRENT_UPLOADS (its default): the slowest 429/503, in seconds;
- an unauthenticated 1 GB upload sent mid-load (streamed, never on disk): seconds to its 401 and
  the bytes the server had taken by then;
- the load average, as this 2-core machine is shared.
The broker is a RabbitMQ 4.0 of the bench's own (the version infra/k8s runs), so that millions of
rows do not weigh on the shared local one, with its data on a tmpfs: on this shared machine's disk
its quorum queue throttled the publishers (flow control) to about 1k rows/s.
"""

import itertools
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from bench import support
from tests.helpers import REPO_ROOT
from tests.helpers.producer import StreamedUpload, producer
from tests.helpers.rabbitmq_server import DockerRabbitmq

UPLOADS, ROWS, GIGABYTE = 8, 1_000_000, 1 << 30
TOKEN = "bench-load-token"
MIDWAY_SECONDS = 20.0
MANIFEST = REPO_ROOT / "infra" / "k8s" / "producer.yaml"


def probe_timeouts() -> dict[str, float]:
    """timeoutSeconds of the producer's probes, by path ("/readyz", "/healthz")."""
    deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = (container[name] for name in ("readinessProbe", "livenessProbe"))
    return {probe["httpGet"]["path"]: float(probe["timeoutSeconds"]) for probe in probes}


def _probe(url: str, stop: threading.Event, latencies: list[tuple[float, float]], failures: list[str]) -> None:
    """GET `url` once a second until `stop`, noting when each was sent, its latency, and any answer but 200."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = client.get(url).status_code
                if status != 200:
                    failures.append(str(status))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            latencies.append((started, time.perf_counter() - started))
            stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))


def _upload(url: str, path: Path) -> tuple[str, float]:
    request = StreamedUpload(url, path=path, token=TOKEN)
    try:
        return request.send_until_answered(timeout=3600)
    finally:
        request.close()


def _summary(name: str, probes: list[tuple[float, float]], timeout: float, since: float) -> dict[str, float]:
    latencies = [latency for _, latency in probes]
    slowest_at, slowest = max(probes, key=lambda probe: probe[1])
    over = [latency > timeout for latency in latencies]
    in_a_row = max((len(list(run)) for slow, run in itertools.groupby(over) if slow), default=0)
    return {
        f"load_{name}_p50_s": round(statistics.median(latencies), 3),
        f"load_{name}_p99_s": round(statistics.quantiles(latencies, n=100, method="inclusive")[98], 3),
        f"load_{name}_max_s": round(slowest, 3),
        f"load_{name}_max_ratio_to_timeout": round(slowest / timeout, 3),
        f"load_{name}_over_timeout": sum(over),
        f"load_{name}_most_in_a_row_over_timeout": in_a_row,
        f"load_{name}_max_at_s": round(slowest_at - since, 1),
    }


def run(uploads: int = UPLOADS, rows: int = ROWS) -> dict[str, float]:
    path = support.sample_csv(rows)
    queue = "bench-load"
    timeouts = probe_timeouts()
    state = support.WORK / "rabbitmq4"
    state.mkdir(parents=True, exist_ok=True)
    broker = DockerRabbitmq.start(state, data_in_memory=True)
    stop = threading.Event()
    latencies: dict[str, list[tuple[float, float]]] = {"/readyz": [], "/healthz": []}
    failures: dict[str, list[str]] = {"/readyz": [], "/healthz": []}
    drained = threading.Event()
    # A consumer keeps the queue short: with millions of rows queued, RabbitMQ 4.0's quorum queue
    # slowed to 0.7k rows/s here, and the bench would measure that instead of the producer.
    drainer = threading.Thread(target=support.discard, args=(broker, queue, drained), daemon=True)
    drainer.start()
    try:
        with producer(queue, UPLOAD_TOKEN=TOKEN, **broker.environment()) as (url, _pid):
            probes = [threading.Thread(target=_probe, args=(url + p, stop, latencies[p], failures[p]))
                      for p in latencies]
            started = time.perf_counter()
            for thread in probes:
                thread.start()
            with ThreadPoolExecutor(uploads) as pool:
                running = [pool.submit(_upload, url, path) for _ in range(uploads)]
                stop.wait(MIDWAY_SECONDS)  # into the load: the accepted uploads are publishing by now
                unauthenticated = StreamedUpload(url, size=GIGABYTE)
                status_401, seconds_401 = unauthenticated.send_until_answered(timeout=30)
                unauthenticated.close()
                answers = [future.result() for future in running]
            elapsed = time.perf_counter() - started
            stop.set()
            for thread in probes:
                thread.join()
    finally:
        stop.set()
        drained.set()
        drainer.join()
        broker.stop()
    accepted = [seconds for status, seconds in answers if status.startswith("HTTP/1.1 200")]
    refused = [seconds for status, seconds in answers if status.split(" ")[1:2] in (["429"], ["503"])]
    assert len(accepted) + len(refused) == uploads, answers
    assert status_401 == "HTTP/1.1 401 Unauthorized", status_401
    return {
        **_summary("readyz", latencies["/readyz"], timeouts["/readyz"], started),
        **_summary("healthz", latencies["/healthz"], timeouts["/healthz"], started),
        "load_probes": len(latencies["/readyz"]) + len(latencies["/healthz"]),
        "load_probe_failures": len(failures["/readyz"]) + len(failures["/healthz"]),
        "load_uploads_accepted": len(accepted),
        "load_refused_max_s": round(max(refused, default=0.0), 3),
        "load_rows_per_s": round(len(accepted) * rows / elapsed),
        "load_unauthenticated_1gb_s": round(seconds_401, 3),
        "load_unauthenticated_1gb_bytes_sent": unauthenticated.sent,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "load_broker_start_s": round(broker.started_in, 1),
    }
