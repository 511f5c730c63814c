"""What the e2e tests deploy into a namespace of the one-node cluster: infra/k8s as shipped, with
the Secrets and the RabbitMQ volume that `make up` makes, and how they read the result."""

import json
import secrets

import yaml
from kubernetes import client

from tests.fixtures_kube import app_manifests, rabbitmq_volume

WORKLOADS = ["statefulset/rabbitmq", "deployment/producer", "deployment/scaler"]


def manifests(**settings: str) -> list[dict]:
    """infra/k8s's documents, with `settings` put in kube-job-config."""
    docs = [d for d in yaml.safe_load_all(app_manifests()) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kube-job-config")
    config["data"].update(settings)
    return docs


def deploy(kube_node, ns: str, **settings: str) -> str:
    """Apply infra/k8s into `ns` as `make up` does and wait for its workloads; return the upload token."""
    token = secrets.token_urlsafe(18)
    kube_node.kubectl("create", "secret", "generic", "rabbitmq-credentials", "-n", ns,
                      "--from-literal=username=kube-job", f"--from-literal=password={secrets.token_urlsafe(18)}")
    kube_node.kubectl("create", "secret", "generic", "upload-token", "-n", ns, f"--from-literal=token={token}")
    rabbitmq_volume(kube_node.control_plane, namespace=ns)
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(manifests(**settings)))
    for workload in WORKLOADS:
        kube_node.kubectl("rollout", "status", "-n", ns, workload, "--timeout=300s", timeout=310)
    return token


def queue_depths(kube_node, ns: str) -> dict[str, int]:
    """Messages in each queue of the namespace's RabbitMQ, as rabbitmqctl in its pod counts them."""
    out = kube_node.kubectl("exec", "-n", ns, "rabbitmq-0", "--", "rabbitmqctl", "-q", "list_queues", "name",
                            "messages", "--formatter", "json").stdout
    return {q["name"]: int(q["messages"]) for q in json.loads(out)}


def finished(job: client.V1Job) -> str | None:
    """Complete or Failed once the Job has ended, else None."""
    for c in (job.status and job.status.conditions) or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c.type
    return None
