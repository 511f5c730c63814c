"""Time to done: from the start of a 1M-row upload until its status says `done`, on the one-node cluster.

infra/k8s as shipped (the ledger included, no-op work) in a namespace of its own. Measured
three times on the same deployment:
- ingest alone: the upload with the scaler scaled to 0, so no Job drains meanwhile;
- drain alone: the scaler back, draining what that upload queued, until `done`;
- both: a second upload of the same rows with everything running, publishing and draining at once.
The ideal is the slower of the first two; `time_to_done_ratio` is the third over it.
"""

import time
from pathlib import Path

import httpx

from bench import cluster, support
from tests.helpers.kube import KubeCluster, deploy


def _until_done(api: httpx.Client, status_url: str) -> None:
    while api.get(status_url).raise_for_status().json()["state"] != "done":
        time.sleep(0.2)


def _measure(kube: KubeCluster, path: Path) -> tuple[float, float, float]:
    namespace = kube.namespace()
    try:
        token = deploy(kube, namespace, WORKER_HANDLER="worker.handlers:noop")
        with kube.port_forward("service/producer", 8000, namespace=namespace) as port:
            api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=None,
                               headers={"Authorization": f"Bearer {token}"})

            def upload() -> tuple[str, float]:
                started = time.perf_counter()
                with open(path, "rb") as f:
                    response = api.post("/upload", files={"file": (path.name, f, "text/csv")})
                if response.status_code != 200:
                    raise RuntimeError(f"the upload got {response.status_code}: {response.text}")
                return response.json()["status_url"], started

            kube.kubectl("scale", "-n", namespace, "deployment/scaler", "--replicas=0")
            status_url, started = upload()
            ingest = time.perf_counter() - started
            kube.kubectl("scale", "-n", namespace, "deployment/scaler", "--replicas=1")
            started = time.perf_counter()
            _until_done(api, status_url)
            drain = time.perf_counter() - started
            status_url, started = upload()
            _until_done(api, status_url)
            both = time.perf_counter() - started
        return ingest, drain, both
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false")


def run(rows: int = 1_000_000) -> dict[str, float]:
    with cluster.node() as kube:
        ingest, drain, both = _measure(kube, support.sample_csv(rows))
    return {"time_to_done_ingest_alone_s": round(ingest, 1), "time_to_done_drain_alone_s": round(drain, 1),
            "time_to_done_1m_s": round(both, 1), "time_to_done_ratio": round(both / max(ingest, drain), 3)}
