"""infra/monitoring: the monitors scrape the ports the manifests name, the dashboard asks for metrics that exist."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import producer.metrics
import scaler.metrics  # noqa: F401 - registers the scaler's metrics
import worker.metrics  # noqa: F401 - registers the worker's metrics
from producer.settings import Settings as ProducerSettings
from scaler import job_template
from scaler.settings import Settings as ScalerSettings
from worker.settings import Settings as WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
MONITORS = list(yaml.safe_load_all((ROOT / "infra" / "monitoring" / "monitors.yaml").read_text()))
DASHBOARD = json.loads((ROOT / "infra" / "monitoring" / "grafana-dashboard.json").read_text())
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def exported() -> set[str]:
    """Every series name the three services can expose."""
    families = [*REGISTRY.collect(), *producer.metrics.UploadProgress([], ledger_up=True).collect()]
    return {f.name + suffix for f in families if f.name.startswith("kubejob_") for suffix in SUFFIXES[f.type]}


def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "infra" / "k8s" / name).read_text()) if d]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exprs = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
    asked = {name for expr in exprs for name in re.findall(r"\bkubejob_\w+", expr)}
    assert asked and asked <= exported(), asked - exported()


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {"Backlog", "Jobs by state", "Rows per second", "Upload progress", "Errors"} <= titles


def test_each_service_monitor_selects_a_service_with_its_port() -> None:
    services = [d for name in ("producer.yaml", "scaler.yaml") for d in manifests(name) if d["kind"] == "Service"]
    for monitor in (m for m in MONITORS if m["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports, monitor["metadata"]["name"]


@pytest.mark.parametrize(("name", "port"), [
    ("producer.yaml", ProducerSettings.model_fields["producer_metrics_port"].default),
    ("scaler.yaml", ScalerSettings.model_fields["scaler_metrics_port"].default),
])
def test_the_metrics_service_reaches_the_port_the_service_serves(name: str, port: int) -> None:
    (deployment,) = [d for d in manifests(name) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port} in container["ports"]


def test_the_pod_monitor_scrapes_the_worker_port_of_the_job_template() -> None:
    (monitor,) = [m for m in MONITORS if m["kind"] == "PodMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"] == {job_template.LABEL_KEY: job_template.LABEL_VALUE}
    (container,) = job_template.load()["spec"]["template"]["spec"]["containers"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    port = WorkerSettings.model_fields["worker_metrics_port"].default
    assert {"name": endpoint["port"], "containerPort": port} in container["ports"]
