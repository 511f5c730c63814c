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
from tests.helpers.kube import KubeCluster, deploy

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


# On the one-node cluster: what the kubelet and the kernel enforce, seen from inside the containers.
CONFINEMENT = ("import os\n"
               "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
               "try:\n    open('/written-by-the-pod', 'w')\n    root = 'writable'\n"
               "except OSError as e:\n    root = e.strerror\n"
               "print(os.getuid(), os.getgid(), status['CapEff'].strip(), status['NoNewPrivs'].strip(), root)")
CONFINED = "10001 10001 0000000000000000 1 Read-only file system"


@pytest.fixture(scope="module")
def deployed(kube_node: KubeCluster):
    """infra/k8s as shipped, running in a namespace of its own (one for the tests that only look)."""
    name = kube_node.namespace()
    deploy(kube_node, name)
    yield name
    kube_node.kubectl("delete", "namespace", name, "--wait=false")


def worker_job(kube_node: KubeCluster, ns: str, command: list[str]) -> str:
    """A Job from the scaler's template, running `command` in the worker image; returns its name."""
    body = job_template.render(job_template.load(), namespace=ns)
    body["spec"]["backoffLimit"] = 0
    body["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return client.BatchV1Api(kube_node.api_client()).create_namespaced_job(ns, body).metadata.name


def job_pod(kube_node: KubeCluster, ns: str, job: str) -> client.V1Pod | None:
    pods = client.CoreV1Api(kube_node.api_client()).list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return pods[0] if pods else None


@pytest.mark.parametrize("deployment", ["producer", "scaler"])
def test_a_running_pod_is_uid_10001_with_no_capabilities_on_a_read_only_root(kube_node, deployed, deployment):
    out = kube_node.kubectl("exec", "-n", deployed, f"deployment/{deployment}", "--",
                            "python", "-c", CONFINEMENT).stdout
    assert out.strip() == CONFINED


def test_a_worker_job_is_uid_10001_with_no_capabilities_on_a_read_only_root(kube_node, deployed):
    job = worker_job(kube_node, deployed, ["python", "-c", CONFINEMENT])
    wait_for(lambda: (pod := job_pod(kube_node, deployed, job)) and pod.status.phase == "Succeeded",
             what=f"Job {job} to succeed", timeout=120)
    assert kube_node.kubectl("logs", "-n", deployed, f"job/{job}").stdout.strip() == CONFINED


def test_the_kubelet_refuses_a_pod_that_would_run_as_root(kube_node, node_namespace):
    ns = node_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "as-root"},
           "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0},
                    "containers": [{"name": "c", "image": "worker:latest", "imagePullPolicy": "IfNotPresent"}]}}
    core = client.CoreV1Api(kube_node.api_client())
    core.create_namespaced_pod(ns, pod)  # the apiserver takes it: only the kubelet checks

    def refused():
        statuses = core.read_namespaced_pod("as-root", ns).status.container_statuses or []
        waiting = statuses and statuses[0].state.waiting
        return waiting and waiting.reason != "ContainerCreating" and waiting
    waiting_state = wait_for(refused, what="the kubelet's verdict on the root pod", timeout=60)
    assert waiting_state.reason == "CreateContainerConfigError"
    assert "non-root" in waiting_state.message, waiting_state.message
    assert core.read_namespaced_pod("as-root", ns).status.phase == "Pending"


def test_a_worker_job_over_its_memory_limit_is_oom_killed(kube_node, node_namespace):
    ns = node_namespace
    kube_node.kubectl("apply", "-n", ns, "-f", str(REPO_ROOT / "infra" / "k8s" / "config.yaml"))
    for secret in ("rabbitmq-credentials", "postgres-credentials"):  # what the worker's env names
        kube_node.kubectl("create", "secret", "generic", secret, "-n", ns,
                          "--from-literal=username=u", "--from-literal=password=p")
    # The template's limit is 256Mi; this holds 512 MiB.
    job = worker_job(kube_node, ns, ["python", "-c", "b = bytearray(512 * 2**20); import time; time.sleep(60)"])

    def terminated():
        pod = job_pod(kube_node, ns, job)
        statuses = (pod and pod.status.container_statuses) or []
        return statuses and statuses[0].state.terminated
    state = wait_for(terminated, what=f"Job {job}'s container to end", timeout=120)
    assert (state.reason, state.exit_code) == ("OOMKilled", 137)
