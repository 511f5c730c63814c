"""The local control plane and one-node cluster against the repo's manifests and the scaler's code.

Tests that need no node talk to the apiserver-only `kube_cluster`; pods run on `kube_node`, a
real kubelet on containerd, from the images that images.sh builds.
"""

import copy

import pytest
import yaml
from kubernetes import client

from scaler import job_template
from scaler.jobs import Jobs
from tests.fixtures_kube import NODE_NAME, REPO_ROOT, KubeCluster, wait_for

MANIFESTS = sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml"))
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")
CREDENTIALS = ("rabbitmq-credentials", "--from-literal=username=kube-job", "--from-literal=password=not-used")


@pytest.fixture
def ns(kube_cluster: KubeCluster):
    """A fresh namespace, deleted (with everything in it) after the test."""
    name = kube_cluster.namespace()
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def node_ns(kube_node: KubeCluster):
    """A fresh namespace on the one-node cluster, deleted after the test."""
    name = kube_node.namespace()
    yield name
    kube_node.kubectl("delete", "namespace", name, "--wait=false")


def scaler_rbac() -> str:
    """The ServiceAccount, Role and RoleBinding documents of infra/k8s/scaler.yaml."""
    docs = yaml.safe_load_all((REPO_ROOT / "infra" / "k8s" / "scaler.yaml").read_text())
    return yaml.safe_dump_all([d for d in docs if d and d["kind"] in RBAC_KINDS])


def pod(name: str, image: str, command: list[str], **spec) -> dict:
    """A one-container pod manifest whose container runs `command` in one of kube-job's images."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": command}], **spec}}


def phase(core: client.CoreV1Api, name: str, ns: str) -> str | None:
    try:
        return core.read_namespaced_pod(name, ns).status.phase
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_apiserver_reports_the_pinned_release(kube_cluster):
    assert '"gitVersion": "v1.35.4"' in kube_cluster.kubectl("version", "-o", "json").stdout
    print(f"control plane started in {kube_cluster.start_seconds:.1f}s")


def test_the_kubelet_registers_a_ready_untainted_node_whose_lease_it_renews(kube_node):
    api = kube_node.api_client()
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert ("InternalIP", kube_node.control_plane.network.node_ip) in [(a.type, a.address) for a in node.status.addresses]
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert not node.spec.taints  # nothing would lift a not-ready taint: no node-lifecycle controller
    leases = client.CoordinationV1Api(api)

    def renewed():  # the kubelet takes its Lease a moment after the Node turns Ready
        found = leases.list_namespaced_lease("kube-node-lease", field_selector=f"metadata.name={NODE_NAME}").items
        return found and found[0].spec.renew_time and found[0]
    lease = wait_for(renewed, what="the kubelet's Lease", timeout=30)
    assert lease.spec.holder_identity == NODE_NAME


def test_manifests_exist_and_pass_a_server_side_dry_run(kube_cluster, ns):
    assert MANIFESTS, "infra/k8s/ holds no manifests"
    # The credentials Secret is made by a command, never stored: the dry run needs it as `make up` has it.
    kube_cluster.kubectl("create", "secret", "generic", *CREDENTIALS, "-n", ns)
    for manifest in MANIFESTS:
        out = kube_cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(manifest)).stdout
        assert "(server dry run)" in out, out
    # A dry run stores nothing.
    assert kube_cluster.kubectl("get", "deployments,statefulsets,services", "-n", ns, "-o", "name").stdout == ""


# (verb, resource, where, allowed): the scaler creates, counts and cleans up its Jobs; nothing else.
CAN_I = [(verb, "jobs.batch", "own", True) for verb in ("create", "get", "list", "watch", "delete")] + [
    ("update", "jobs.batch", "own", False), ("patch", "jobs.batch", "own", False),
    ("get", "secrets", "own", False), ("list", "secrets", "own", False),
    ("create", "pods", "own", False), ("list", "pods", "own", False), ("delete", "pods", "own", False),
    ("create", "deployments.apps", "own", False), ("get", "configmaps", "own", False),
    ("list", "jobs.batch", "other", False), ("create", "jobs.batch", "other", False),
    ("get", "secrets", "other", False),
]


def test_scaler_service_account_can_manage_jobs_in_its_namespace_and_nothing_else(kube_cluster, ns):
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=scaler_rbac())
    who = f"--as=system:serviceaccount:{ns}:scaler"
    answers = {}
    for verb, resource, where, _ in CAN_I:
        target = ns if where == "own" else "default"
        result = kube_cluster.kubectl("auth", "can-i", verb, resource, "-n", target, who, check=False)
        answers[(verb, resource, where)] = result.stdout.strip()
    assert answers == {(v, r, w): "yes" if ok else "no" for v, r, w, ok in CAN_I}
    # And the complete list: only jobs.batch beyond what every authenticated user may do.
    listed = kube_cluster.kubectl("auth", "can-i", "--list", "-n", ns, who).stdout.splitlines()[1:]
    resources = {line.split()[0]: line for line in listed if line and not line.startswith(" ")}
    granted = {r for r in resources if not r.startswith("self") and not r.startswith("/")
               and r not in ("[/api/*]", "[/api]", "[/apis/*]", "[/apis]", "[/healthz]", "[/livez]",
                             "[/openapi/*]", "[/openapi]", "[/readyz]", "[/version/]", "[/version]")}
    assert granted == {"jobs.batch"}, listed
    verbs = resources["jobs.batch"].rsplit("[", 1)[1].rstrip("]").split()
    assert sorted(verbs) == ["create", "delete", "get", "list", "watch"]


def test_pod_acts_as_its_own_service_account(kube_node, node_ns):
    ns = node_ns
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=scaler_rbac())
    kube_node.kubectl("create", "secret", "generic", "hidden", "--from-literal=x=y", "-n", ns)
    script = (
        "from kubernetes import client, config\n"
        "try:\n    config.load_incluster_config()\nexcept config.ConfigException:\n    config.load_kube_config()\n"
        f"print('jobs', len(client.BatchV1Api().list_namespaced_job('{ns}').items))\n"
        f"try:\n    client.CoreV1Api().read_namespaced_secret('hidden', '{ns}')\n    print('secret read')\n"
        "except client.ApiException as e:\n    print('secret', e.status)\n"
        "print('whoami', client.AuthenticationV1Api().create_self_subject_review("
        "client.V1SelfSubjectReview()).status.user_info.username)\n")
    manifest = pod("as-scaler", "scaler:latest", ["python", "-c", script], serviceAccountName="scaler")
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))
    core = client.CoreV1Api(kube_node.api_client())
    assert wait_for(lambda: phase(core, "as-scaler", ns) in ("Succeeded", "Failed") and phase(core, "as-scaler", ns),
                    what="the pod to finish") == "Succeeded"
    assert kube_node.kubectl("logs", "as-scaler", "-n", ns).stdout.splitlines() == [
        "jobs 0", "secret 403", f"whoami system:serviceaccount:{ns}:scaler"]


def worker_job_template(command: list[str], *, ttl: int) -> dict:
    """The scaler's own Job template, with a stand-in command and the given TTL."""
    template = copy.deepcopy(job_template.load())
    template["spec"]["ttlSecondsAfterFinished"] = ttl
    template["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return template


def job_settings(kube_cluster: KubeCluster, ns: str) -> None:
    """What the template's env refers to: the shared ConfigMap and the credentials Secret."""
    config_doc = yaml.safe_load((REPO_ROOT / "infra" / "k8s" / "config.yaml").read_text())
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(config_doc))
    kube_cluster.kubectl("create", "secret", "generic", *CREDENTIALS, "-n", ns)


def test_job_from_the_scaler_template_runs_and_is_removed_by_its_ttl(kube_node, node_ns):
    ns, kube_cluster = node_ns, kube_node
    job_settings(kube_cluster, ns)
    body = job_template.render(worker_job_template(["python", "-c", "print('worked')"], ttl=3), namespace=ns)
    batch = client.BatchV1Api(kube_cluster.api_client())
    name = batch.create_namespaced_job(ns, body).metadata.name

    def complete():
        job = batch.read_namespaced_job(name, ns)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
    wait_for(complete, what=f"Job {name} to complete")
    assert kube_cluster.kubectl("logs", f"job/{name}", "-n", ns).stdout == "worked\n"

    def gone():
        return not batch.list_namespaced_job(ns).items and not client.CoreV1Api(
            kube_cluster.api_client()).list_namespaced_pod(ns, label_selector="app=worker-job").items
    wait_for(gone, what=f"TTL removal of Job {name} and its pod", timeout=60)


def test_scaler_counts_its_jobs_while_pending_and_running_not_once_finished(kube_node, node_ns):
    ns, kube_cluster = node_ns, kube_node
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=scaler_rbac())
    token = kube_cluster.kubectl("create", "token", "scaler", "-n", ns).stdout.strip()
    configuration = kube_cluster.client_configuration()
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}  # the scaler's own rights, not admin's
    # Runs until the test makes /tmp/release in the container (its emptyDir) with kubectl exec.
    wait = "import pathlib, time\nwhile not pathlib.Path('/tmp/release').exists():\n    time.sleep(0.2)"
    jobs = Jobs(client.BatchV1Api(client.ApiClient(configuration)), namespace=ns,
                template=worker_job_template(["python", "-c", wait], ttl=300), timeout_s=10)
    core = client.CoreV1Api(kube_cluster.api_client())

    def pod_phase():
        pods = core.list_namespaced_pod(ns, label_selector="app=worker-job").items
        return pods and pods[0].status.phase

    name = jobs.create()  # pending: its pod cannot start while kube-job-config is missing
    wait_for(lambda: pod_phase() == "Pending", what="a pending worker pod")
    assert jobs.count_unfinished() == 1
    job_settings(kube_cluster, ns)  # the kubelet retries, and the pod starts
    wait_for(lambda: pod_phase() == "Running", what="the worker pod to run")
    assert jobs.count_unfinished() == 1
    kube_cluster.kubectl("exec", "-n", ns, f"job/{name}", "--", "touch", "/tmp/release")
    wait_for(lambda: jobs.count_unfinished() == 0, what="the finished Job to stop counting")
    assert client.BatchV1Api(kube_cluster.api_client()).read_namespaced_job(name, ns).status.succeeded == 1
