"""The local control plane and one-node cluster against the repo's manifests and the scaler's code.

Tests that need no node talk to the apiserver-only `kube_cluster`; pods run on `kube_node`, a
real kubelet on containerd, from the images that images.sh builds.
"""

import copy
import json
import subprocess

import pytest
import yaml
from kubernetes import client

from scaler import job_template
from scaler.jobs import Jobs, Unfinished
from tests.helpers import REPO_ROOT, wait_for
from tests.helpers.kube import NODE_NAME, KubeCluster, pinned_release, scaler_rbac

from localcluster.netns import NodeNetwork
from localcluster.node import POD_CIDR

MANIFESTS = sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml"))
CREDENTIALS = ("rabbitmq-credentials", "--from-literal=username=kube-job", "--from-literal=password=not-used")


def pod(name: str, image: str, command: list[str], **spec) -> dict:
    """A one-container pod manifest whose container runs `command` in one of kube-job's images."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": command}], **spec}}


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


def test_the_kubelet_registers_a_ready_untainted_node_whose_lease_it_renews(kube_node):
    api = kube_node.api_client()
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    addresses = [(a.type, a.address) for a in node.status.addresses]
    assert ("InternalIP", kube_node.control_plane.network.node_ip) in addresses
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert not node.spec.taints  # nothing would lift a not-ready taint: no node-lifecycle controller
    leases = client.CoordinationV1Api(api)

    def renewed():  # the kubelet takes its Lease a moment after the Node turns Ready
        found = leases.list_namespaced_lease("kube-node-lease", field_selector=f"metadata.name={NODE_NAME}").items
        return found and found[0].spec.renew_time and found[0]
    lease = wait_for(renewed, what="the kubelet's Lease", timeout=30)
    assert lease.spec.holder_identity == NODE_NAME


def test_manifests_exist_and_pass_a_server_side_dry_run(kube_cluster, namespace):
    assert MANIFESTS, "infra/k8s/ holds no manifests"
    # The credentials Secret is made by a command, never stored: the dry run needs it as `make up` has it.
    kube_cluster.kubectl("create", "secret", "generic", *CREDENTIALS, "-n", namespace)
    for manifest in MANIFESTS:
        out = kube_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest)).stdout
        assert "(server dry run)" in out, out
    # A dry run stores nothing.
    assert kube_cluster.kubectl("get", "deployments,statefulsets,services", "-n", namespace, "-o", "name").stdout == ""


def test_pod_acts_as_its_own_service_account(kube_node, node_namespace):
    kube_cluster, namespace = kube_node, node_namespace
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
    manifest = pod("as-scaler", "scaler:latest", ["python", "-c", script], serviceAccountName="scaler")
    kube_cluster.apply(namespace, [manifest])
    core = client.CoreV1Api(kube_cluster.api_client())
    ended = wait_for(lambda: phase(core, "as-scaler", namespace) in ("Succeeded", "Failed")
                     and phase(core, "as-scaler", namespace), what="the pod to finish")
    assert ended == "Succeeded"
    assert kube_cluster.kubectl("logs", "as-scaler", "-n", namespace).stdout.splitlines() == [
        "jobs 0", "secret 403", f"whoami system:serviceaccount:{namespace}:scaler"]


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


def test_job_from_the_scaler_template_runs_and_is_removed_by_its_ttl(kube_node, node_namespace):
    kube_cluster, namespace = kube_node, node_namespace
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


def test_a_worker_exiting_2_fails_its_job_at_once_by_the_templates_pod_failure_policy(kube_node, node_namespace):
    kube_cluster, namespace = kube_node, node_namespace
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


def test_scaler_counts_its_jobs_while_pending_and_running_not_once_finished(kube_node, node_namespace):
    kube_cluster, namespace = kube_node, node_namespace
    kube_cluster.apply(namespace, scaler_rbac())
    token = kube_cluster.kubectl("create", "token", "scaler", "-n", namespace).stdout.strip()
    configuration = kube_cluster.client_configuration()
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}  # the scaler's own rights, not admin's
    # Runs until the test makes /tmp/release in the container (its emptyDir) with kubectl exec.
    wait = "import pathlib, time\nwhile not pathlib.Path('/tmp/release').exists():\n    time.sleep(0.2)"
    jobs = Jobs(client.BatchV1Api(client.ApiClient(configuration)), namespace=namespace,
                template=worker_job_template(["python", "-c", wait], ttl=300), timeout_s=10)
    core = client.CoreV1Api(kube_cluster.api_client())

    def pod_phase():
        pods = core.list_namespaced_pod(namespace, label_selector=job_template.LABEL_SELECTOR).items
        return pods and pods[0].status.phase

    name = jobs.create().name  # pending: its pod cannot start while kube-job-config is missing
    wait_for(lambda: pod_phase() == "Pending", what="a pending worker pod")
    assert jobs.unfinished() == Unfinished(pending=1, running=0)
    job_settings(kube_cluster, namespace)  # the kubelet retries, and the pod starts
    wait_for(lambda: pod_phase() == "Running", what="the worker pod to run")
    # The Job controller counts the pod ready a moment after the pod reports it.
    wait_for(lambda: jobs.unfinished() == Unfinished(pending=0, running=1), what="the Job to count as running")
    kube_cluster.kubectl("exec", "-n", namespace, f"job/{name}", "--", "touch", "/tmp/release")
    wait_for(lambda: jobs.unfinished().total == 0, what="the finished Job to stop counting")
    assert client.BatchV1Api(kube_cluster.api_client()).read_namespaced_job(name, namespace).status.succeeded == 1


def test_the_node_namespace_reaches_only_the_host_end_of_its_veth(kube_node):
    network = kube_node.control_plane.network
    routes = subprocess.run(["ip", "-n", network.name, "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert routes and not [r for r in routes if r.startswith("default")], routes
    # Besides its own subnets (the veth /30; the pod bridge once a pod has run), nothing.
    routed = {r.split()[0] for r in routes if r.split()[0] not in ("local", "broadcast")}
    assert routed - {POD_CIDR} == {network.subnet}, routes


def test_a_node_network_where_the_host_already_routes_is_refused():
    taken = NodeNetwork("kube-job-refused", "127.0.0.0/30")  # loopback's own addresses
    with pytest.raises(RuntimeError, match="already routes"):
        taken.create()
    assert not taken.exists()
