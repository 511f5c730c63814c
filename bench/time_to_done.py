"""Time to done: from the start of a 1M-row upload until its status says `done`, on the one-node cluster.

infra/k8s as shipped (the ledger included, no-op work) in a namespace of its own. Measured
three times on the same deployment:
- ingest alone: the upload with the scaler scaled to 0, so no Job drains meanwhile;
- drain alone: the scaler back, draining what that upload queued, until `done`;
- both: a second upload of the same rows with everything running, publishing and draining at once.
The ideal is the slower of the first two; `time_to_done_ratio` is the third over it. The busy
CPU seconds of the whole machine in each phase say whether running both at once cost more
work than running them one after the other, or only had less of the machine each.
"""

import time
from pathlib import Path

from bench import cluster, support
from tests.helpers.kube import KubeCluster


def _until_done(deployment: cluster.Deployment, status_url: str) -> None:
    while deployment.status(status_url)["state"] != "done":
        time.sleep(0.2)


def _measure(kube: KubeCluster, path: Path) -> dict[str, tuple[float, float]]:
    """Seconds and the machine's busy CPU seconds of each phase."""
    phases = {}
    with cluster.deployed(kube, WORKER_HANDLER="worker.handlers:noop") as deployment:
        deployment.scale_scaler(0)
        started, cpu = time.perf_counter(), support.MachineCpu()
        status_url = deployment.upload(path)
        phases["ingest_alone"] = time.perf_counter() - started, cpu.busy_s()
        deployment.scale_scaler(1)
        started, cpu = time.perf_counter(), support.MachineCpu()
        _until_done(deployment, status_url)
        phases["drain_alone"] = time.perf_counter() - started, cpu.busy_s()
        started, cpu = time.perf_counter(), support.MachineCpu()
        _until_done(deployment, deployment.upload(path))
        phases["both"] = time.perf_counter() - started, cpu.busy_s()
    return phases

def run(rows: int = 1_000_000) -> dict[str, float]:
    with cluster.node() as kube:
        phases = _measure(kube, support.sample_csv(rows))
    (ingest, _), (drain, _), (both, _) = phases["ingest_alone"], phases["drain_alone"], phases["both"]
    return {"time_to_done_ingest_alone_s": round(ingest, 1), "time_to_done_drain_alone_s": round(drain, 1),
            "time_to_done_1m_s": round(both, 1), "time_to_done_ratio": round(both / max(ingest, drain), 3),
            **{f"time_to_done_{phase}_machine_cpu_s": round(cpu_s) for phase, (_, cpu_s) in phases.items()}}
