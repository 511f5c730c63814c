"""The scaler's real code, one poll at a time, against real RabbitMQ and a real kube-apiserver.

No node is started: the Jobs' pods stay pending, which is exactly the case where the
scaler must count a Job whose worker has not started consuming yet.
"""

import copy
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, utils

from scaler import job_template
from scaler.jobs import Jobs, KubeError, batch_api
from scaler.loop import Limits, Scaler
from scaler.queue_depth import ManagementClient, QueueReadError

MANIFEST = Path(__file__).parents[2] / "infra" / "k8s" / "scaler.yaml"
STATS_WAIT_S = 20  # the management API's counts lag by its statistics interval
LIMITS = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=60.0)


@pytest.fixture
def admin(kube_cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))


@pytest.fixture
def namespace(kube_cluster, admin, monkeypatch):
    """A fresh namespace; the Jobs created in it are deleted after the test, then it is."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    name = f"scaler-test-{uuid.uuid4().hex[:8]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    batch.delete_collection_namespaced_job(
        name, label_selector=job_template.LABEL_SELECTOR, propagation_policy="Background"
    )
    core.delete_namespace(name, propagation_policy="Background")


def worker_jobs(namespace: str) -> list[client.V1Job]:
    return batch_api().list_namespaced_job(
        namespace, label_selector=job_template.LABEL_SELECTOR
    ).items


def management(broker, queue: str, base_url: str | None = None) -> ManagementClient:
    return ManagementClient(
        base_url=base_url or broker.management_url, user=broker.user, password=broker.password,
        vhost="/", queue=queue, timeout_s=2.0,
    )


def publish(broker, queue: str, count: int) -> None:
    """Put `count` messages in `queue` and wait until the management API reports them."""
    with broker.connection() as conn:
        channel = conn.channel()
        channel.queue_declare(queue)
        for n in range(count):
            channel.basic_publish("", queue, str(n).encode())
    reader, deadline = management(broker, queue), time.monotonic() + STATS_WAIT_S
    while time.monotonic() < deadline:
        try:
            if reader.read().messages == count:
                return
        except QueueReadError:
            pass  # no counts yet for a queue this new
        time.sleep(0.25)
    pytest.fail(f"management API never reported {count} messages in {queue}")


def scaler(broker, queue: str, namespace: str, *, limits: Limits = LIMITS, clock=time.monotonic,
           base_url: str | None = None, template: str = "") -> Scaler:
    jobs = Jobs(batch_api(), namespace=namespace, template=job_template.load(template),
                timeout_s=5)
    return Scaler(queue=management(broker, queue, base_url), jobs=jobs, limits=limits, clock=clock)


def test_backlog_gets_its_jobs_once_and_a_second_poll_adds_none(
    broker, queue_name, namespace, caplog
):
    publish(broker, queue_name, 1_200)  # 500 per Job: 3 Jobs
    the_scaler = scaler(broker, queue_name, namespace)

    with caplog.at_level(logging.INFO, logger="scaler"):
        assert the_scaler.poll_once().create == 3
    jobs = worker_jobs(namespace)
    assert len(jobs) == 3
    (line,) = [r for r in caplog.records if r.getMessage() == "poll"]
    assert (line.depth, line.unfinished_jobs, line.create) == (1_200, 0, 3)
    assert line.reason and sorted(line.jobs_created) == sorted(j.metadata.name for j in jobs)
    for job in jobs:
        assert job.metadata.name.startswith("worker-job-")
        assert job.spec.template.metadata.labels["app"] == "worker-job"
        assert job.spec.ttl_seconds_after_finished == 300

    # Their pods never start here, yet they count: no duplicates.
    assert the_scaler.poll_once().create == 0
    assert len(worker_jobs(namespace)) == 3


def test_never_more_than_max_jobs(broker, queue_name, namespace):
    publish(broker, queue_name, 3_000)
    limits = Limits(threshold=20, messages_per_job=100, max_jobs=2, small_backlog_wait_s=60.0)
    the_scaler = scaler(broker, queue_name, namespace, limits=limits)
    assert [the_scaler.poll_once().create for _ in range(3)] == [2, 0, 0]
    assert len(worker_jobs(namespace)) == 2


def images_by_uid(namespace: str) -> dict[str, str]:
    return {j.metadata.uid: j.spec.template.spec.containers[0].image
            for j in worker_jobs(namespace)}


def test_a_new_template_leaves_running_jobs_alone_and_counts_them(broker, queue_name, namespace):
    publish(broker, queue_name, 1_000)
    assert scaler(broker, queue_name, namespace).poll_once().create == 2
    before = images_by_uid(namespace)

    # What `kubectl edit configmap scaler-job-template` + a rollout restart amounts to.
    edited = job_template.PACKAGED.read_text().replace("image: worker:latest", "image: worker:v2")
    assert scaler(broker, queue_name, namespace, template=edited).poll_once().create == 0
    after = images_by_uid(namespace)
    assert after == before and set(after.values()) == {"worker:latest"}


# Fails by deadline, so the Job controller fails it whether or not a pod ever runs.
FAILING = """
apiVersion: batch/v1
kind: Job
metadata: {generateName: failing-job-}
spec:
  ttlSecondsAfterFinished: 300
  backoffLimit: 0
  activeDeadlineSeconds: 1
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: worker
          image: worker:latest
          command: ["python", "-c", "import time; time.sleep(60)"]
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {cpu: 100m, memory: 64Mi}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
"""


def test_a_failed_job_is_not_counted(broker, queue_name, namespace):
    failing = Jobs(batch_api(), namespace=namespace, template=job_template.load(FAILING),
                   timeout_s=5)
    failing.create()
    wait_until = time.monotonic() + 60
    while failing.count_unfinished() and time.monotonic() < wait_until:
        time.sleep(0.5)
    (failed,) = worker_jobs(namespace)
    conditions = (failed.status and failed.status.conditions) or []
    true = {c.type for c in conditions if c.status == "True"}
    # FailureTarget comes first; Failed follows once the pod is gone.
    assert true & {"Failed", "FailureTarget"}, failed.status

    publish(broker, queue_name, 1_200)
    assert scaler(broker, queue_name, namespace).poll_once().create == 3


def test_small_backlog_gets_one_job_after_waiting(broker, queue_name, namespace):
    publish(broker, queue_name, 3)
    now = [1000.0]
    limits = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=30.0)
    the_scaler = scaler(broker, queue_name, namespace, limits=limits, clock=lambda: now[0])
    assert the_scaler.poll_once().create == 0
    now[0] += 29.0
    assert the_scaler.poll_once().create == 0
    now[0] += 1.0
    assert the_scaler.poll_once().create == 1
    now[0] += 600.0
    assert the_scaler.poll_once().create == 0  # its Job is unfinished
    assert len(worker_jobs(namespace)) == 1


def _dry_run_pod(admin: client.ApiClient, namespace: str, pod_spec: dict) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "check-"},
            "spec": pod_spec}
    client.CoreV1Api(admin).create_namespaced_pod(namespace, body, dry_run="All")


def _ensure_default_service_account(admin: client.ApiClient, namespace: str) -> None:
    # Pod admission needs it; the controller-manager creates it, but maybe not yet.
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
    try:
        client.CoreV1Api(admin).create_namespaced_service_account(namespace, account)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def test_default_template_passes_restricted_pod_security_admission(admin, namespace):
    _ensure_default_service_account(admin, namespace)
    pod_spec = job_template.load()["spec"]["template"]["spec"]
    _dry_run_pod(admin, namespace, pod_spec)  # the namespace enforces `restricted`

    # The control: the same pod without its container securityContext is refused.
    loose = {**pod_spec, "containers": [{**pod_spec["containers"][0], "securityContext": {}}]}
    with pytest.raises(client.ApiException) as refused:
        _dry_run_pod(admin, namespace, loose)
    assert refused.value.status == 403 and "restricted" in refused.value.body


def _answering(status: int, body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server dispatches to
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.mark.parametrize(
    "status, body, backs_off",
    [(500, b"", True), (200, b"{}", False)],
    ids=["server error backs off", "stats not ready polls on"],
)
def test_unreadable_queue_creates_nothing_and_the_loop_keeps_going(
    broker, queue_name, namespace, caplog, status, body, backs_off
):
    publish(broker, queue_name, 1_000)  # a real backlog the scaler must not act on blindly
    server = ThreadingHTTPServer(("127.0.0.1", 0), _answering(status, body))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="scaler"):
        loop = run_in_thread(scaler(broker, queue_name, namespace, base_url=url), stop)
        time.sleep(3.0)
        stop.set()
        loop.join(timeout=5)
    server.shutdown()
    server.server_close()
    assert not loop.is_alive()
    failures = [r for r in caplog.records if r.getMessage() == "poll failed"]
    assert len(failures) >= 2
    expected_type = "QueueReadError" if backs_off else "StatsNotReady"
    assert all(r.error_type == expected_type for r in failures)
    assert max(r.retry_in_s for r in failures) == (1.0 if backs_off else 0.5)
    assert worker_jobs(namespace) == []


class _Switchable(BaseHTTPRequestHandler):
    """Answers 500 until `healthy` is set, then a queue of 1000 ready messages."""

    healthy = threading.Event()
    counts = json.dumps({"messages": 1000, "messages_ready": 1000,
                         "messages_unacknowledged": 0, "consumers": 0}).encode()

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        body = self.counts if self.healthy.is_set() else b""
        self.send_response(200 if self.healthy.is_set() else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_in_thread(the_scaler: Scaler, stop: threading.Event) -> threading.Thread:
    loop = threading.Thread(target=the_scaler.run, args=(stop,),
                            kwargs={"poll_s": 0.5, "max_backoff_s": 1.0})
    loop.start()
    return loop


def test_the_loop_recovers_when_the_management_api_comes_back(broker, namespace, caplog):
    handler = type("Handler", (_Switchable,), {"healthy": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    the_scaler = scaler(broker, "rows", namespace, base_url=url)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="scaler"):
        loop = run_in_thread(the_scaler, stop)
        try:
            time.sleep(2.0)
            assert worker_jobs(namespace) == []
            handler.healthy.set()
            deadline = time.monotonic() + 10
            while len(worker_jobs(namespace)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # a few more healthy polls, which must not add Jobs
        finally:
            stop.set()
            loop.join(timeout=10)
            server.shutdown()
            server.server_close()
    assert len(worker_jobs(namespace)) == 2  # 1000 messages, 500 per Job
    messages = [r.getMessage() for r in caplog.records]
    assert "poll failed" in messages and messages[-1] == "poll"


def test_the_loop_outlives_an_unreachable_apiserver(broker, queue_name, caplog):
    unreachable = client.Configuration(host="https://127.0.0.1:9")
    unreachable.retries = 0
    jobs = Jobs(client.BatchV1Api(client.ApiClient(unreachable)), namespace="default",
                template=job_template.load(), timeout_s=1)
    publish(broker, queue_name, 100)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="scaler"):
        the_scaler = Scaler(queue=management(broker, queue_name), jobs=jobs, limits=LIMITS)
        loop = run_in_thread(the_scaler, stop)
        time.sleep(2.0)
        assert loop.is_alive()
        stop.set()
        loop.join(timeout=10)
    failed = [r for r in caplog.records if r.getMessage() == "poll failed"]
    assert failed and all(r.error_type == "KubeError" for r in failed)


def _as_scaler_account(admin: client.ApiClient, namespace: str) -> client.ApiClient:
    """A client holding a token of the `scaler` ServiceAccount from infra/k8s/scaler.yaml."""
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            utils.create_from_dict(admin, doc, namespace=namespace)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        "scaler", namespace, request
    ).status.token
    configuration = copy.deepcopy(admin.configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.refresh_api_key_hook = None  # it would put the admin's token back
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def test_the_scaler_role_allows_its_jobs_and_nothing_else(broker, queue_name, admin, namespace):
    as_scaler = _as_scaler_account(admin, namespace)
    jobs = Jobs(client.BatchV1Api(as_scaler), namespace=namespace, template=job_template.load(),
                timeout_s=5)
    publish(broker, queue_name, 600)
    the_scaler = Scaler(queue=management(broker, queue_name), jobs=jobs, limits=LIMITS)
    assert the_scaler.poll_once().create == 2
    assert len(worker_jobs(namespace)) == 2

    forbidden = [
        lambda: client.CoreV1Api(as_scaler).list_namespaced_pod(namespace),
        lambda: client.CoreV1Api(as_scaler).list_namespaced_secret(namespace),
        lambda: client.BatchV1Api(as_scaler).list_namespaced_job("default"),
    ]
    for call in forbidden:
        with pytest.raises(client.ApiException) as refused:
            call()
        assert refused.value.status == 403


def test_unreachable_apiserver_is_our_error_and_creates_nothing():
    unreachable = client.Configuration(host="https://127.0.0.1:9")  # discard port: nothing
    unreachable.retries = 0
    api = client.BatchV1Api(client.ApiClient(unreachable))
    jobs = Jobs(api, namespace="default", template=job_template.load(), timeout_s=1)
    with pytest.raises(KubeError, match="unreachable"):
        jobs.count_unfinished()
    with pytest.raises(KubeError, match="unreachable"):
        jobs.create()
