"""The local control plane and node agent against the repo's manifests and the scaler's code.

Everything here talks to the real kube-apiserver started by the `kube_cluster` fixture;
pods run as local processes under the node agent (infra/local-cluster/localcluster).
"""

import copy
import json
import pathlib

import pytest
import yaml
from kubernetes import client

from scaler import job_template
from scaler.jobs import Jobs, Unfinished
from tests.helpers import REPO_ROOT, free_port, wait_for
from tests.helpers.kube import KubeCluster, pinned_release, scaler_rbac

MANIFESTS = sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml"))
CREDENTIALS = ("rabbitmq-credentials", "--from-literal=username=kube-job", "--from-literal=password=not-used")


def pod(name: str, command: list[str], **spec) -> dict:
    """A one-container pod manifest whose container runs `command` on the node agent."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": "agent-test", "command": command}], **spec}}


def phase(core: client.CoreV1Api, name: str, namespace: str) -> str | None:
    try:
        return core.read_namespaced_pod(name, namespace).status.phase
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_apiserver_reports_the_pinned_release(kube_cluster):
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned_release()


def test_node_agent_registers_a_ready_untainted_node_whose_lease_it_renews(kube_cluster, node_agent):
    api = kube_cluster.api_client()
    node = client.CoreV1Api(api).read_node(node_agent)
    assert {c.type: c.status for c in node.status.conditions} == {"Ready": "True"}
    assert next((a.type, a.address) for a in node.status.addresses) == ("InternalIP", "127.0.0.1")
    assert node.status.daemon_endpoints.kubelet_endpoint.port > 0
    assert not node.spec.taints  # nothing would lift a not-ready taint: no node-lifecycle controller
    lease = client.CoordinationV1Api(api).read_namespaced_lease(node_agent, "kube-node-lease")
    assert lease.spec.holder_identity == node_agent and lease.spec.renew_time is not None


def test_manifests_exist_and_pass_a_server_side_dry_run(kube_cluster, namespace):
    assert MANIFESTS, "infra/k8s/ holds no manifests"
    # The credentials Secret is made by a command, never stored: the dry run needs it as `make up` has it.
    kube_cluster.kubectl("create", "secret", "generic", *CREDENTIALS, "-n", namespace)
    for manifest in MANIFESTS:
        out = kube_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest)).stdout
        assert "(server dry run)" in out, out
    # A dry run stores nothing.
    assert kube_cluster.kubectl("get", "deployments,statefulsets,services", "-n", namespace, "-o", "name").stdout == ""


def test_pod_acts_as_its_own_service_account(kube_cluster, node_agent, namespace):
    kube_cluster.apply(namespace, scaler_rbac())
    kube_cluster.kubectl("create", "secret", "generic", "hidden", "--from-literal=x=y", "-n", namespace)
    script = (
        "from kubernetes import client, config\n"
        "try:\n    config.load_incluster_config()\nexcept config.ConfigException:\n    config.load_kube_config()\n"
        f"print('jobs', len(client.BatchV1Api().list_namespaced_job('{namespace}').items))\n"
        f"try:\n    client.CoreV1Api().read_namespaced_secret('hidden', '{namespace}')\n    print('secret read')\n"
        "except client.ApiException as e:\n    print('secret', e.status)\n"
        "print('whoami', client.AuthenticationV1Api().create_self_subject_review("
        "client.V1SelfSubjectReview()).status.user_info.username)\n")
    manifest = pod("as-scaler", ["python", "-c", script], serviceAccountName="scaler")
    kube_cluster.apply(namespace, [manifest])
    core = client.CoreV1Api(kube_cluster.api_client())
    ended = wait_for(lambda: phase(core, "as-scaler", namespace) in ("Succeeded", "Failed")
                     and phase(core, "as-scaler", namespace), what="the pod to finish")
    assert ended == "Succeeded"
    assert kube_cluster.kubectl("logs", "as-scaler", "-n", namespace).stdout.splitlines() == [
        "jobs 0", "secret 403", f"whoami system:serviceaccount:{namespace}:scaler"]


def test_env_sources_and_service_addresses_reach_the_process(kube_cluster, node_agent, namespace):
    kube_cluster.kubectl("create", "configmap", "settings", "--from-literal=QUEUE_NAME=rows",
                         "--from-literal=RABBITMQ_MANAGEMENT_URL=http://rabbitmq:15672", "-n", namespace)
    kube_cluster.kubectl("create", "secret", "generic", *CREDENTIALS, "-n", namespace)
    env = [{"name": "RABBITMQ_HOST", "value": "rabbitmq"},
           {"name": "AMQP_URL", "value": "amqp://u:p@rabbitmq:5672/"},
           {"name": "NOT_A_HOST", "value": "rabbitmq-operator says hi"},
           {"name": "DATABASE_URL", "value": "postgresql://postgres:5432/kubejob"},
           {"name": "PGUSER", "value": "postgres"},
           {"name": "USER_NOT_HOST", "value": "postgresql://postgres:pw@db.example:5432/x"},
           {"name": "RABBITMQ_USER", "valueFrom": {"secretKeyRef": {"name": "rabbitmq-credentials",
                                                                    "key": "username"}}},
           {"name": "Q", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "QUEUE_NAME"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "EXPANDED", "value": "$(Q)-x"}]
    manifest = pod("env", ["python", "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                   automountServiceAccountToken=False)
    manifest["spec"]["containers"][0].update(
        env=env, envFrom=[{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "rabbitmq-credentials"},
                                                                  "prefix": "S_"}])
    kube_cluster.apply(namespace, [manifest])
    core = client.CoreV1Api(kube_cluster.api_client())
    wait_for(lambda: phase(core, "env", namespace) == "Succeeded", what="the env pod to succeed")
    seen = yaml.safe_load(kube_cluster.kubectl("logs", "env", "-n", namespace).stdout)
    assert {k: seen.get(k) for k in ("RABBITMQ_HOST", "AMQP_URL", "NOT_A_HOST", "DATABASE_URL", "PGUSER",
                                     "USER_NOT_HOST", "RABBITMQ_USER", "Q",
                                     "POD_NAMESPACE", "POD_NAME", "EXPANDED", "QUEUE_NAME",
                                     "RABBITMQ_MANAGEMENT_URL", "S_password", "KUBECONFIG",
                                     "KUBERNETES_SERVICE_HOST")} == {
        "RABBITMQ_HOST": "127.0.0.1", "AMQP_URL": "amqp://u:p@127.0.0.1:5672/",
        "NOT_A_HOST": "rabbitmq-operator says hi", "DATABASE_URL": "postgresql://127.0.0.1:5432/kubejob",
        "PGUSER": "postgres", "USER_NOT_HOST": "postgresql://postgres:pw@db.example:5432/x",
        "RABBITMQ_USER": "kube-job", "Q": "rows",
        "POD_NAMESPACE": namespace, "POD_NAME": "env", "EXPANDED": "rows-x", "QUEUE_NAME": "rows",
        "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15672", "S_password": "not-used",
        "KUBECONFIG": None, "KUBERNETES_SERVICE_HOST": None}


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has ended)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", [[], ["--force", "--grace-period=0"]], ids=["graceful", "forced"])
def test_deleting_a_running_pod_stops_its_process_group(kube_cluster, node_agent, namespace, tmp_path, how):
    pidfile = tmp_path / "pid"
    # The child shows that the whole process group goes, not only the container's first process.
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\ntime.sleep(600)")
    kube_cluster.apply(namespace, [pod("sleeper", ["python", "-c", script])])
    core = client.CoreV1Api(kube_cluster.api_client())
    wait_for(lambda: phase(core, "sleeper", namespace) == "Running" and pidfile.exists() and pidfile.read_text(),
             what="the pod to run")
    pids = [int(p) for p in pidfile.read_text().split()]
    kube_cluster.kubectl("delete", "pod", "sleeper", "-n", namespace, "--timeout=30s", *how)
    assert phase(core, "sleeper", namespace) is None
    wait_for(lambda: not any(alive(p) for p in pids), what="the pod's processes to end", timeout=15)


def restarted(kube_cluster: KubeCluster, pod_name: str, namespace: str, *, times: int) -> client.V1ContainerStatus:
    """The pod's container status once it has restarted `times` times (within 30 s)."""
    core = client.CoreV1Api(kube_cluster.api_client())

    def status():
        statuses = core.read_namespaced_pod(pod_name, namespace).status.container_statuses or []
        return statuses and statuses[0].restart_count >= times and statuses[0]
    return wait_for(status, what=f"{times} restarts of {pod_name}", timeout=30)


def test_always_restarted_container_counts_its_restarts(kube_cluster, node_agent, namespace):
    manifest = pod("crasher", ["python", "-c", "print('crash'); raise SystemExit(7)"], restartPolicy="Always")
    kube_cluster.apply(namespace, [manifest])
    status = restarted(kube_cluster, "crasher", namespace, times=2)
    assert status.last_state.terminated.exit_code == 7
    assert kube_cluster.kubectl("logs", "crasher", "-n", namespace, "--previous").stdout == "crash\n"


def test_readiness_probe_decides_when_a_running_pod_is_ready(kube_cluster, node_agent, namespace):
    port = free_port()
    # Serves HTTP only after 3 s, so the pod runs a while before its probe passes.
    script = ("import http.server, time\ntime.sleep(3)\n"
              f"http.server.test(http.server.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')")
    manifest = pod("slow-web", ["python", "-c", script])
    manifest["spec"]["containers"][0].update(
        ports=[{"name": "http", "containerPort": port}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1})
    kube_cluster.apply(namespace, [manifest])
    core = client.CoreV1Api(kube_cluster.api_client())

    def readiness():
        status = core.read_namespaced_pod("slow-web", namespace).status
        ready = {c.type: c.status for c in status.conditions or []}.get("Ready")
        return status.phase == "Running" and (status.container_statuses[0].ready, ready)
    assert wait_for(readiness, what="the pod to run") == (False, "False")
    assert wait_for(lambda: readiness() == (True, "True"), what="the probe to pass", timeout=20)


def test_failing_liveness_probe_restarts_the_container(kube_cluster, node_agent, namespace):
    manifest = pod("deaf", ["python", "-c", "import time; print('started', flush=True); time.sleep(600)"],
                   restartPolicy="Always")
    # Nothing listens on this port, so every probe fails.
    manifest["spec"]["containers"][0]["livenessProbe"] = {
        "tcpSocket": {"port": free_port()}, "periodSeconds": 1, "failureThreshold": 2}
    kube_cluster.apply(namespace, [manifest])
    status = restarted(kube_cluster, "deaf", namespace, times=1)
    assert status.last_state.terminated.exit_code == 128 + 9  # SIGKILL


def test_logs_follow_streams_until_the_container_ends(kube_cluster, node_agent, namespace):
    script = "import time\nfor i in range(4):\n    print('tick', i, flush=True); time.sleep(0.5)"
    kube_cluster.apply(namespace, [pod("ticker", ["python", "-c", script])])
    core = client.CoreV1Api(kube_cluster.api_client())
    wait_for(lambda: phase(core, "ticker", namespace) == "Running", what="the ticker to run")
    followed = kube_cluster.kubectl("logs", "-f", "ticker", "-n", namespace, timeout=30).stdout
    assert followed.splitlines() == [f"tick {i}" for i in range(4)]
    assert kube_cluster.kubectl("logs", "ticker", "-n", namespace, "--tail=1").stdout == "tick 3\n"


def worker_job_template(command: list[str], *, ttl: int) -> dict:
    """The scaler's own Job template, with a stand-in command and the given TTL."""
    template = copy.deepcopy(job_template.load())
    template["spec"]["ttlSecondsAfterFinished"] = ttl
    template["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return template


def job_settings(kube_cluster: KubeCluster, namespace: str) -> None:
    """What the template's env refers to: the shared ConfigMap and the credentials Secrets."""
    config_doc = yaml.safe_load((REPO_ROOT / "infra" / "k8s" / "config.yaml").read_text())
    kube_cluster.apply(namespace, [config_doc])
    kube_cluster.create_credentials(namespace, user="kube-job", password="not-used")


def test_job_from_the_scaler_template_runs_and_is_removed_by_its_ttl(kube_cluster, node_agent, namespace):
    job_settings(kube_cluster, namespace)
    body = job_template.render(worker_job_template(["python", "-c", "print('worked')"], ttl=3), namespace=namespace)
    batch = client.BatchV1Api(kube_cluster.api_client())
    name = batch.create_namespaced_job(namespace, body).metadata.name

    def complete():
        job = batch.read_namespaced_job(name, namespace)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
    wait_for(complete, what=f"Job {name} to complete")
    assert kube_cluster.kubectl("logs", f"job/{name}", "-n", namespace).stdout == "worked\n"

    core = client.CoreV1Api(kube_cluster.api_client())

    def gone():
        return not batch.list_namespaced_job(namespace).items and not core.list_namespaced_pod(
            namespace, label_selector=job_template.LABEL_SELECTOR).items
    wait_for(gone, what=f"TTL removal of Job {name} and its pod", timeout=60)


def test_a_worker_exiting_2_fails_its_job_at_once_by_the_templates_pod_failure_policy(
        kube_cluster, node_agent, namespace):
    job_settings(kube_cluster, namespace)
    exits_2 = ["python", "-c", "import sys; sys.exit(2)"]
    body = job_template.render(worker_job_template(exits_2, ttl=300), namespace=namespace)
    batch = client.BatchV1Api(kube_cluster.api_client())
    name = batch.create_namespaced_job(namespace, body).metadata.name

    def failed():
        job = batch.read_namespaced_job(name, namespace)
        return next((c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"), None)
    condition = wait_for(failed, what=f"Job {name} to fail")
    assert condition.reason == "PodFailurePolicy", condition
    # Not retried up to backoffLimit (3): the one pod's exit code failed the Job.
    assert batch.read_namespaced_job(name, namespace).status.failed == 1


def test_scaler_counts_its_jobs_while_pending_and_running_not_once_finished(kube_cluster, node_agent, namespace,
                                                                            tmp_path):
    kube_cluster.apply(namespace, scaler_rbac())
    token = kube_cluster.kubectl("create", "token", "scaler", "-n", namespace).stdout.strip()
    configuration = kube_cluster.client_configuration()
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}  # the scaler's own rights, not admin's
    release = tmp_path / "release"
    wait = f"import pathlib, time\nwhile not pathlib.Path({str(release)!r}).exists():\n    time.sleep(0.2)"
    jobs = Jobs(client.BatchV1Api(client.ApiClient(configuration)), namespace=namespace,
                template=worker_job_template(["python", "-c", wait], ttl=300), timeout_s=10)
    core = client.CoreV1Api(kube_cluster.api_client())

    def pod_phase():
        pods = core.list_namespaced_pod(namespace, label_selector=job_template.LABEL_SELECTOR).items
        return pods and pods[0].status.phase

    name = jobs.create().name  # pending: its pod cannot start while kube-job-config is missing
    wait_for(lambda: pod_phase() == "Pending", what="a pending worker pod")
    assert jobs.unfinished() == Unfinished(pending=1, running=0)
    job_settings(kube_cluster, namespace)  # the agent retries, as a kubelet does, and the pod starts
    wait_for(lambda: pod_phase() == "Running", what="the worker pod to run")
    # The Job controller counts the pod ready a moment after the pod reports it.
    wait_for(lambda: jobs.unfinished() == Unfinished(pending=0, running=1), what="the Job to count as running")
    release.touch()
    wait_for(lambda: jobs.unfinished().total == 0, what="the finished Job to stop counting")
    assert client.BatchV1Api(kube_cluster.api_client()).read_namespaced_job(name, namespace).status.succeeded == 1
