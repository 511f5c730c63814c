"""The deployment gives nothing away: restricted pods, no credentials in text or logs."""

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from scaler import job_template
from tests.helpers import REPO_ROOT, free_port, wait_for
from tests.helpers.kube import KubeCluster

MANIFESTS = sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml"))
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_templates() -> list[tuple[str, dict]]:
    """(name, pod template) of every workload in infra/k8s/ and of the scaler's Job template."""
    templates = []
    for doc in documents():
        if doc["kind"] in WORKLOADS:
            template = doc["spec"]["template"]
            # A StatefulSet's claims become volumes of its pods.
            claims = [c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])]
            template["spec"].setdefault("volumes", []).extend(
                {"name": claim, "persistentVolumeClaim": {"claimName": claim}} for claim in claims
            )
            templates.append((f"{doc['kind']}/{doc['metadata']['name']}", template))
    job = job_template.load("")
    templates.append(("the scaler's Job", job["spec"]["template"]))
    return templates


@pytest.fixture
def restricted_namespace(kube_cluster: KubeCluster, namespace: str):
    """A namespace whose Pod Security admission enforces the `restricted` standard."""
    kube_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kube_cluster.kubectl("create", "serviceaccount", "scaler", "-n", namespace)
    return namespace, client.CoreV1Api(kube_cluster.api_client())


@pytest.mark.parametrize(("name", "template"), pod_templates(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_pod_passes_the_restricted_pod_security_standard(restricted_namespace, name: str, template: dict) -> None:
    namespace, core = restricted_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "psa-", **template.get("metadata", {})},
           "spec": template["spec"]}
    try:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    except client.ApiException as exc:
        pytest.fail(f"{name} is refused by the restricted standard: {exc.body}", pytrace=False)
    for container in template["spec"]["containers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        # Beyond the standard: nothing a compromised process writes outlives it.
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_the_admission_check_refuses_a_worker_without_its_security_context(kube_cluster, restricted_namespace) -> None:
    """The control for the test above: admission does refuse, and for the standard's sake alone."""
    namespace, core = restricted_namespace
    pod_spec = job_template.load()["spec"]["template"]["spec"]
    loose = {**pod_spec, "containers": [{**pod_spec["containers"][0], "securityContext": {}}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "psa-"}, "spec": loose}
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert refused.value.status == 403
    kube_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce-")
    core.create_namespaced_pod(namespace, pod, dry_run="All")


def test_manifests_hold_no_credentials() -> None:
    for path in MANIFESTS:
        text = path.read_text()
        assert not re.search(r"guest|password\s*[:=]\s*\S|RABBITMQ_(USER|PASSWORD|DEFAULT_PASS)\s*:", text, re.I), path
    for doc in documents():
        assert doc["kind"] != "Secret", "Secrets are made by a command, never stored in the repo"
        for _, template in [(None, doc["spec"]["template"])] if doc["kind"] in WORKLOADS else []:
            for container in template["spec"]["containers"]:
                for var in container.get("env", []):
                    if re.search("USER|PASS|TOKEN", var["name"]):
                        assert "secretKeyRef" in var.get("valueFrom", {}), (doc["metadata"]["name"], var["name"])


SECRET = "pw-" + uuid.uuid4().hex


def logs_of(service: str, env: dict[str, str], expected: str, log: Path) -> str:
    """What `python -m service` prints, with the password set to SECRET, until it has said `expected` (and a
    second more, for anything it prints after) or exited; a producer is sent uploads until then."""
    environment = os.environ | {"RABBITMQ_PASSWORD": SECRET} | env
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", service], cwd=REPO_ROOT, env=environment,
                                   stdout=out, stderr=subprocess.STDOUT, text=True)

    def said() -> bool:
        if service == "producer":  # it only talks to the broker when asked to
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"http://127.0.0.1:{env['PRODUCER_PORT']}/upload", files={"file": ("a.csv", b"id\n1\n")},
                           timeout=10)
        return expected in log.read_text() or process.poll() is not None
    try:
        wait_for(said, what=f"{service} to log {expected!r}", timeout=45, interval=0.2)
        time.sleep(1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return log.read_text()


@pytest.mark.parametrize(
    ("service", "env", "expected"),
    [
        ("producer", {"RABBITMQ_USER": "nobody", "PRODUCER_PORT": str(free_port())}, "upload interrupted"),
        ("worker", {"RABBITMQ_USER": "nobody"}, "broker connection failed"),
        ("producer", {"DATABASE_URL": f"postgresql://kubejob:{SECRET}@localhost:5432/kubejob",
                      "PRODUCER_PORT": str(free_port())}, "password authentication failed"),
        ("worker", {"DATABASE_URL": f"postgresql://kubejob:{SECRET}@localhost:5432/kubejob",
                    "WORKER_DATABASE_RETRY_SECONDS": "1"}, "password authentication failed"),
        ("scaler", {"RABBITMQ_USER": "nobody", "SCALER_POLL_SECONDS": "0.5"}, "ACCESS_REFUSED"),
        ("scaler", {"RABBITMQ_MANAGEMENT_URL": f"http://nobody:{SECRET}@localhost:15672"}, "must not hold credentials"),
    ],
)
def test_no_log_line_holds_the_password(
    kube_cluster: KubeCluster, service: str, env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    output = logs_of(service, env | {"KUBECONFIG": str(kube_cluster.kubeconfig)}, expected, tmp_path / "log")
    assert expected in output, f"{service} did not log the failure, so this test proves nothing:\n{output}"
    assert SECRET not in output, output
