"""What worker Jobs need in a test namespace, and when a Job has ended: shared by the e2e tests."""

import secrets

import yaml
from kubernetes import client

from tests.fixtures_kube import app_manifests


def manifests(**settings: str) -> list[dict]:
    """infra/k8s's documents (without the RabbitMQ workload), with `settings` put in kube-job-config."""
    docs = list(yaml.safe_load_all(app_manifests()))
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kube-job-config")
    config["data"].update(settings)
    return docs


def create_credentials(kube_cluster, ns: str, broker) -> None:
    """The Secrets the pods' secretKeyRefs name: the test broker's account and scripts/postgres.sh's."""
    kube_cluster.kubectl("create", "secret", "generic", "rabbitmq-credentials", "-n", ns,
                         f"--from-literal=username={broker.user}", f"--from-literal=password={broker.password}")
    kube_cluster.kubectl("create", "secret", "generic", "postgres-credentials", "-n", ns,
                         "--from-literal=username=kubejob", "--from-literal=password=kubejob")


def create_upload_token(kube_cluster, ns: str) -> str:
    """The Secret upload-token the producer's pod requires; returns the token."""
    token = secrets.token_urlsafe(18)
    kube_cluster.kubectl("create", "secret", "generic", "upload-token", "-n", ns, f"--from-literal=token={token}")
    return token


def apply(kube_cluster, ns: str, docs: list[dict]) -> None:
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def finished(job: client.V1Job) -> str | None:
    """Complete or Failed once the Job has ended, else None."""
    for c in (job.status and job.status.conditions) or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c.type
    return None
