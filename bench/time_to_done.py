"""Time to done: from the start of a 1M-row upload until its status says `done`, on the one-node cluster.

infra/k8s as shipped (the ledger included, no-op work) in a namespace of its own. Measured
three times on the same deployment:
- ingest alone: the upload with the scaler scaled to 0, so no Job drains meanwhile;
- drain alone: the scaler back, draining what that upload queued, until `done`;
- both: a second upload of the same rows with everything running, publishing and draining at once.
The ideal is the slower of the first two; `time_to_done_ratio` is the third over it. The busy
CPU seconds of the whole machine in each phase say whether running both at once cost more
work than running them one after the other, or only had less of the machine each; each app's
CPU seconds (its pods' cgroups) say where. The share of the machine's CPU busy in each phase
says whether the machine set the pace: when the drain alone keeps every core busy, both at
once cannot take less than the busy CPU seconds of the two phases together, over the cores,
and the ideal is out of reach of any design on that machine.
"""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from bench import cluster, support
from tests.helpers.kube import KubeCluster


def _until_done(deployment: cluster.Deployment, status_url: str) -> None:
    while deployment.status(status_url)["state"] != "done":
        time.sleep(0.2)


def _measure(kube: KubeCluster, path: Path) -> dict[str, float]:
    """Seconds, the machine's busy CPU seconds and each app's CPU seconds, per phase."""
    figures = {}
    with cluster.deployed(kube, WORKER_HANDLER="worker.handlers:noop") as deployment:
        pods = cluster.PodCpu(kube, deployment.namespace)

        @contextlib.contextmanager
        def phase(name: str) -> Iterator[None]:
            started, machine, apps = time.perf_counter(), support.MachineCpu(), pods.by_app()
            yield
            took = time.perf_counter() - started
            figures[f"time_to_done_{name}_s"] = round(took, 1)
            figures[f"time_to_done_{name}_machine_cpu_s"] = round(machine.busy_s())
            figures[f"time_to_done_{name}_machine_busy"] = round(machine.busy_share(took), 3)
            for app, seconds in sorted(pods.by_app().items()):
                figures[f"time_to_done_{name}_cpu_s_{app}"] = round(seconds - apps.get(app, 0.0), 1)

        try:
            deployment.scale_scaler(0)
            with phase("ingest_alone"):
                status_url = deployment.upload(path)
            deployment.scale_scaler(1)
            with phase("drain_alone"):
                _until_done(deployment, status_url)
            with phase("both"):
                _until_done(deployment, deployment.upload(path))
        finally:
            pods.stop()
    return figures


def run(rows: int = 1_000_000) -> dict[str, float]:
    with cluster.node() as kube:
        figures = _measure(kube, support.sample_csv(rows))
    ideal = max(figures["time_to_done_ingest_alone_s"], figures["time_to_done_drain_alone_s"])
    figures["time_to_done_1m_s"] = figures.pop("time_to_done_both_s")
    figures["time_to_done_ratio"] = round(figures["time_to_done_1m_s"] / ideal, 3)
    return figures
