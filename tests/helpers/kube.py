"""A real local Kubernetes for tests and benchmarks, and what the app's manifests need in a namespace."""

import contextlib
import json
import pathlib
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, config

from scaler import events, job_template, jobs, kube, pods
from tests.helpers import REPO_ROOT, wait_for

# Importable once tests.helpers has put infra/local-cluster on the path.
from localcluster.control_plane import ControlPlane
from localcluster.node import NODE_NAME  # noqa: F401 - the one Node's name, for tests
from localcluster.stack import WORKLOADS, claim_volumes
from localcluster.stack import manifests as app_manifests

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")
# Every (apiGroup, resource, verb) the scaler's code calls, as its modules declare them.
SCALER_PERMISSIONS = jobs.PERMISSIONS | pods.PERMISSIONS | events.PERMISSIONS


class KubeCluster:
    """A running control plane: its kubeconfig, clients and a kubectl bound to it."""

    def __init__(self, control_plane: ControlPlane, bins: pathlib.Path, start_seconds: float) -> None:
        self.control_plane, self.bin_dir, self.start_seconds = control_plane, bins, start_seconds
        self.kubeconfig = control_plane.kubeconfig
        self.state = control_plane.state

    def api_client(self) -> client.ApiClient:
        """A new admin API client."""
        return config.new_client_from_config(str(self.kubeconfig))

    def client_configuration(self) -> client.Configuration:
        """The admin client configuration, for code that builds its own ApiClient."""
        configuration = client.Configuration()
        config.load_kube_config(str(self.kubeconfig), client_configuration=configuration, persist_config=False)
        return configuration

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; raise with its output when `check` and it fails."""
        result = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int, *, namespace: str) -> Iterator[int]:
        """`kubectl port-forward` to `target`'s `port` for the block; yields the local port.

        Its output goes to a file, not a pipe: it writes a line per connection, and a pipe nobody
        reads would block it. A failure in the block carries the file's tail.
        """
        log = self.state / "logs" / f"port-forward-{uuid.uuid4().hex[:8]}.log"
        with log.open("w") as out:
            process = subprocess.Popen([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                                        "port-forward", "-n", namespace, target, f":{port}"],
                                       stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            found = wait_for(lambda: (process.poll() is None and re.search(r"127\.0\.0\.1:(\d+)", log.read_text()))
                             or process.poll() is not None, what=f"kubectl port-forward {target}", timeout=30,
                             interval=0.1)
            if process.poll() is not None:
                pytest.fail(f"kubectl port-forward {target} exited: {log.read_text()}", pytrace=False)
            try:
                yield int(found.group(1))
            except Exception as exc:
                said = log.read_text()[-2000:]
                raise AssertionError(f"{exc!r}; kubectl port-forward {target} said:\n{said}") from exc
        finally:
            process.terminate()
            process.wait(timeout=10)

    def namespace(self) -> str:
        """Create a fresh namespace (with its default ServiceAccount in place) and return its name."""
        name = f"test-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        # The ServiceAccount admission plugin rejects pods until the controller made `default`.
        wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                 what=f"ServiceAccount default in {name}")
        return name

    def apply(self, namespace: str, docs: list[dict]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    def create_credentials(self, namespace: str, *, user: str, password: str) -> None:
        """The Secrets the pods' secretKeyRefs name: the test broker's account and scripts/postgres.sh's."""
        self.kubectl("create", "secret", "generic", "rabbitmq-credentials", "-n", namespace,
                     f"--from-literal=username={user}", f"--from-literal=password={password}")
        self.kubectl("create", "secret", "generic", "postgres-credentials", "-n", namespace,
                     "--from-literal=username=kubejob", "--from-literal=password=kubejob")

    def create_upload_token(self, namespace: str) -> str:
        """The Secret upload-token the producer's pod requires; returns the token."""
        token = secrets.token_urlsafe(18)
        self.kubectl("create", "secret", "generic", "upload-token", "-n", namespace, f"--from-literal=token={token}")
        return token


def app_documents(**settings: str) -> list[dict]:
    """infra/k8s as `make up` applies it, with `settings` put in kube-job-config."""
    docs = [d for d in yaml.safe_load_all(app_manifests()) if d]
    shared = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kube-job-config")
    shared["data"].update(settings)
    return docs


def deploy(kube_node: KubeCluster, namespace: str, **settings: str) -> str:
    """Apply infra/k8s into `namespace` of the one-node cluster as `make up` does (Secrets with fresh
    passwords, the StatefulSets' volumes), `settings` put in kube-job-config, and wait for every
    workload; return the upload token."""
    for name in ("rabbitmq-credentials", "postgres-credentials"):
        kube_node.kubectl("create", "secret", "generic", name, "-n", namespace, "--from-literal=username=kube-job",
                          f"--from-literal=password={secrets.token_urlsafe(18)}")
    token = kube_node.create_upload_token(namespace)
    claim_volumes(kube_node.control_plane, namespace=namespace)
    kube_node.apply(namespace, app_documents(**settings))
    for workload in WORKLOADS:
        kube_node.kubectl("rollout", "status", "-n", namespace, workload, "--timeout=300s", timeout=310)
    return token


def worker_jobs(kube_node: KubeCluster, namespace: str) -> list[dict]:
    """The worker Jobs of a namespace as the API's JSON, as the scaler reads them (for scaler.jobs.is_finished)."""
    return kube.list_items("list jobs", client.BatchV1Api(kube_node.api_client()).list_namespaced_job, namespace,
                           label_selector=job_template.LABEL_SELECTOR, timeout_s=30)


def queue_depths(kube_node: KubeCluster, namespace: str) -> dict[str, int]:
    """Messages in each queue of the namespace's RabbitMQ, as rabbitmqctl in its pod counts them."""
    out = kube_node.kubectl("exec", "-n", namespace, "rabbitmq-0", "--", "rabbitmqctl", "-q", "list_queues",
                            "name", "messages", "--formatter", "json").stdout
    return {q["name"]: int(q["messages"]) for q in json.loads(out)}


def queue_policies(kube_node: KubeCluster, namespace: str) -> dict[str, str]:
    """The policy in effect on each queue of the namespace's RabbitMQ ("" for none), as rabbitmqctl says."""
    out = kube_node.kubectl("exec", "-n", namespace, "rabbitmq-0", "--", "rabbitmqctl", "-q", "list_queues",
                            "name", "policy", "--formatter", "json").stdout
    return {q["name"]: q["policy"] or "" for q in json.loads(out)}


def shipped_settings() -> dict[str, str]:
    """The settings infra/k8s/config.yaml deploys, as environment variables."""
    return yaml.safe_load((REPO_ROOT / "infra" / "k8s" / "config.yaml").read_text())["data"]


def scaler_rbac() -> list[dict]:
    """The ServiceAccount, Role and RoleBinding documents of infra/k8s/scaler.yaml."""
    docs = yaml.safe_load_all((REPO_ROOT / "infra" / "k8s" / "scaler.yaml").read_text())
    return [d for d in docs if d and d["kind"] in RBAC_KINDS]


def pinned_release() -> str:
    """The Kubernetes release infra/local-cluster/go.mod builds, e.g. "v1.35.4"."""
    go_mod = (REPO_ROOT / "infra" / "local-cluster" / "go.mod").read_text()
    return re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE).group(1)
