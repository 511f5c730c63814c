"""The scaler's real code, one poll at a time, against real RabbitMQ, PostgreSQL and a real kube-apiserver.

No node is started: the Jobs' pods stay pending, which is exactly the case where the
scaler must count a Job whose worker has not started consuming yet.
"""

import collections
import copy
import logging
import threading
import time

import pytest
from kubernetes import client, utils

from scaler import events, job_template
from scaler.jobs import Jobs
from scaler.kube import KubeError, api_client
from scaler.loop import Limits, Scaler
from scaler.pods import WorkerPods
from tests.helpers import wait_for
from tests.helpers.backlog import backlog, pause
from tests.helpers.broker import rows
from tests.helpers.kube import SCALER_PERMISSIONS, scaler_rbac

BACKOFF = {"stuck_s": 120.0, "job_backoff_s": 10.0, "job_backoff_max_s": 600.0}
LIMITS = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=60.0, **BACKOFF)


@pytest.fixture(autouse=True)
def kubeconfig(kube_cluster, monkeypatch) -> None:
    """The scaler's own api_client() finds the test cluster as it finds any: by KUBECONFIG."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def admin(kube_cluster) -> client.ApiClient:
    return kube_cluster.api_client()


def batch_api() -> client.BatchV1Api:
    return client.BatchV1Api(api_client())


def worker_jobs(namespace: str) -> list[client.V1Job]:
    return batch_api().list_namespaced_job(
        namespace, label_selector=job_template.LABEL_SELECTOR
    ).items


def worker_pods(namespace: str, api: client.ApiClient | None = None) -> WorkerPods:
    return WorkerPods(client.CoreV1Api(api or api_client()), namespace=namespace, timeout_s=5)


def recorder(namespace: str, api: client.ApiClient | None = None) -> events.Recorder:
    """Events as the scaler records them, for a scaler process without a Pod of its own."""
    return events.Recorder(client.EventsV1Api(api or api_client()), namespace=namespace, instance="test-scaler",
                           scaler=events.scaler_reference(namespace=namespace, pod_name="", pod_uid=""), timeout_s=5)


def recorded(namespace: str, reason: str) -> list[client.EventsV1Event]:
    """The Events of `reason` in `namespace`, as the events API lists them."""
    listed = client.EventsV1Api(api_client()).list_namespaced_event(namespace, field_selector=f"reason={reason}")
    return listed.items


def publish(broker, queue: str, count: int) -> str:
    """An upload of `count` rows into its own queue, as the producer makes one; wait until the scaler's own
    reading counts them, and return its id."""
    before = reading(broker, queue)
    upload_id = broker.publish_rows(queue, rows(count))
    wait_for(lambda: reading(broker, queue) == before + count, what=f"the scaler to read {count} more in {queue}",
             timeout=10, interval=0.1)
    return upload_id


def reading(broker, queue: str) -> int:
    reader = backlog(broker, queue)
    try:
        return reader.read().messages
    finally:
        reader.close()


def scaler(broker, queue: str, namespace: str, *, limits: Limits = LIMITS, clock=time.monotonic,
           amqp_port: int | None = None, template: str = "") -> Scaler:
    jobs = Jobs(batch_api(), namespace=namespace, template=job_template.load(template),
                timeout_s=5)
    return Scaler(queue=backlog(broker, queue, port=amqp_port), jobs=jobs, pods=worker_pods(namespace),
                  limits=limits, events=recorder(namespace), clock=clock)


def test_backlog_gets_its_jobs_once_and_a_second_poll_adds_none(
    broker, queue_name, namespace, caplog
):
    publish(broker, queue_name, 1_200)  # 500 per Job: 3 Jobs
    the_scaler = scaler(broker, queue_name, namespace)

    with caplog.at_level(logging.INFO, logger="scaler"):
        decision = the_scaler.poll_once()
    assert decision.create == 3
    jobs = worker_jobs(namespace)
    assert len(jobs) == 3
    (line,) = [r for r in caplog.records if r.getMessage() == "jobs created"]
    assert (line.depth, line.unfinished_jobs, line.create, line.reason) == (1_200, 0, 3, decision.reason)
    assert sorted(line.jobs_created) == sorted(j.metadata.name for j in jobs)
    template = job_template.load()
    for job in jobs:
        assert job.metadata.name.startswith(template["metadata"]["generateName"])
        assert job.spec.template.metadata.labels[job_template.LABEL_KEY] == job_template.LABEL_VALUE
        # Finished Jobs must go away on their own: the scaler is not allowed to delete them.
        assert job.spec.ttl_seconds_after_finished == template["spec"]["ttlSecondsAfterFinished"]

    # Their pods never start here, yet they count: no duplicates.
    assert the_scaler.poll_once().create == 0
    assert len(worker_jobs(namespace)) == 3


def test_each_job_it_creates_has_an_event_saying_why(broker, queue_name, namespace, kube_cluster):
    publish(broker, queue_name, 1_200)
    assert scaler(broker, queue_name, namespace).poll_once().create == 3
    jobs = {job.metadata.uid: job.metadata.name for job in worker_jobs(namespace)}
    found = wait_for(lambda: (lambda e: e if len(e) == 3 else None)(recorded(namespace, "CreatedForBacklog")),
                     what="an Event for each of the 3 Jobs")
    assert {e.regarding.uid: e.regarding.name for e in found} == jobs
    note = "queue depth 1200: backlog needs 3 jobs; 3 wanted, 0 unfinished before, at most 5"
    for event in found:
        assert (event.type, event.regarding.kind, event.note) == ("Normal", "Job", note)
        assert (event.reporting_controller, event.reporting_instance) == (events.CONTROLLER, "test-scaler")
    described = kube_cluster.kubectl("describe", "job", next(iter(jobs.values())), "-n", namespace).stdout
    assert "CreatedForBacklog" in described and note in described, described


def test_the_recorder_keeps_a_bounded_number_of_series_dropping_the_least_recent(namespace, kube_cluster,
                                                                                  monkeypatch):
    monkeypatch.setattr(events, "SERIES_LIMIT", 2)
    the_recorder = recorder(namespace)
    for job in ("a", "b", "a", "c", "a", "b"):  # "b" is the least recently repeated when "c" comes
        the_recorder.job_warning(f"job-{job}", "", "PodStuck", f"{job} is stuck")
    the_recorder.close()
    by_job = collections.defaultdict(list)
    for event in recorded(namespace, "PodStuck"):
        by_job[event.regarding.name].append(event.series.count if event.series else 1)
    # "a" stayed one series of three; "b" was dropped, so its repeat began a new Event.
    assert dict(by_job) == {"job-a": [3], "job-b": [1, 1], "job-c": [1]}


def test_a_queue_it_cannot_read_is_one_warning_event_whose_count_grows(queue_name, namespace, kube_cluster, broker):
    the_scaler = scaler(broker, queue_name, namespace, amqp_port=1)  # refused
    stop = threading.Event()
    polling = threading.Thread(target=the_scaler.run, args=(stop,), kwargs={"poll_s": 0.5, "max_backoff_s": 0.5})
    polling.start()
    try:
        def grown():
            warnings = recorded(namespace, "QueueReadFailed")
            return warnings if warnings and warnings[0].series and warnings[0].series.count >= 3 else None
        (warning,) = wait_for(grown, what="a QueueReadFailed Event counting 3 failed reads", timeout=30)
    finally:
        stop.set()
        polling.join(timeout=10)
    assert warning.type == "Warning" and "AMQP unreachable" in warning.note
    assert (warning.regarding.kind, warning.regarding.name) == ("Deployment", "scaler")
    listed = kube_cluster.kubectl("get", "events", "-n", namespace).stdout
    assert "QueueReadFailed" in listed and "deployment/scaler" in listed, listed


def test_a_backlog_all_paused_gets_no_job_and_paused_rows_never_add_jobs(broker, queue_name, namespace, caplog):
    for upload_id in (publish(broker, queue_name, count) for count in (1_200, 800)):
        pause(upload_id)  # their 2,000 rows stay in their queues, for when they are resumed
    the_scaler = scaler(broker, queue_name, namespace)
    with caplog.at_level(logging.DEBUG, logger="scaler"):
        for _ in range(2):
            decision = the_scaler.poll_once()
            assert (decision.create, decision.kind) == (0, "queue_empty")
    assert worker_jobs(namespace) == []
    (line, *_) = [r for r in caplog.records if r.getMessage() == "decision changed"]
    assert (line.depth, line.uploads, line.paused_uploads) == (0, 0, 2)
    assert broker.backlog(queue_name) == 2_000

    publish(broker, queue_name, 600)  # one served upload: 2 Jobs for its 600 rows, not 6 for 2,600
    assert the_scaler.poll_once().create == 2
    assert len(worker_jobs(namespace)) == 2


def test_never_more_than_max_jobs(broker, queue_name, namespace):
    publish(broker, queue_name, 3_000)
    limits = Limits(threshold=20, messages_per_job=100, max_jobs=2, small_backlog_wait_s=60.0, **BACKOFF)
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
    while failing.unfinished().total and time.monotonic() < wait_until:
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
    limits = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=30.0, **BACKOFF)
    the_scaler = scaler(broker, queue_name, namespace, limits=limits, clock=lambda: now[0])
    assert the_scaler.poll_once().create == 0
    now[0] += 29.0
    assert the_scaler.poll_once().create == 0
    now[0] += 1.0
    assert the_scaler.poll_once().create == 1
    now[0] += 600.0
    assert the_scaler.poll_once().create == 0  # its Job is unfinished
    assert len(worker_jobs(namespace)) == 1


def _as_scaler_account(admin: client.ApiClient, namespace: str) -> client.ApiClient:
    """A client holding a token of the `scaler` ServiceAccount from infra/k8s/scaler.yaml."""
    for doc in scaler_rbac():
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


def allowed(api: client.ApiClient, namespace: str) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the apiserver lets `api`'s account use in `namespace`."""
    review = client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace))
    status = client.AuthorizationV1Api(api).create_self_subject_rules_review(review).status
    assert not status.incomplete, status.evaluation_error
    return {(group, resource, verb) for rule in status.resource_rules
            for group in rule.api_groups or [""] for resource in rule.resources or [] for verb in rule.verbs}


def test_the_scaler_role_allows_what_the_scaler_calls_and_nothing_else(broker, queue_name, admin, namespace):
    as_scaler = _as_scaler_account(admin, namespace)
    # What any account may do anywhere (review its own rights, ...): the Role adds to that.
    everywhere = allowed(as_scaler, "default")
    assert allowed(as_scaler, namespace) - everywhere == SCALER_PERMISSIONS
    assert not {group for group, _, _ in everywhere} & {group for group, _, _ in SCALER_PERMISSIONS}

    # And they are enough: a poll through the ServiceAccount's token counts and creates Jobs, lists
    # their pods, and records their Events; a repeated warning patches its Event's series.
    jobs = Jobs(client.BatchV1Api(as_scaler), namespace=namespace, template=job_template.load(),
                timeout_s=5)
    publish(broker, queue_name, 600)
    as_recorder = recorder(namespace, as_scaler)
    reader = backlog(broker, queue_name)
    the_scaler = Scaler(queue=reader, jobs=jobs, pods=worker_pods(namespace, as_scaler), limits=LIMITS,
                        events=as_recorder)
    assert the_scaler.poll_once().create == 2
    assert len(worker_jobs(namespace)) == 2
    for _ in range(2):
        as_recorder.warning("QueueReadFailed", "injected by the test", action="ReadQueue", kind="test")
    as_recorder.close()
    assert len(recorded(namespace, "CreatedForBacklog")) == 2
    (warning,) = recorded(namespace, "QueueReadFailed")
    assert warning.series.count == 2


def test_unreachable_apiserver_is_our_error_and_creates_nothing():
    unreachable = client.Configuration(host="https://127.0.0.1:9")  # discard port: nothing
    unreachable.retries = 0
    api = client.BatchV1Api(client.ApiClient(unreachable))
    jobs = Jobs(api, namespace="default", template=job_template.load(), timeout_s=1)
    with pytest.raises(KubeError, match="unreachable"):
        jobs.unfinished()
    with pytest.raises(KubeError, match="unreachable"):
        jobs.create()


def test_jobs_that_keep_failing_are_replaced_ever_more_slowly_and_it_says_why(broker, queue_name, namespace, caplog):
    publish(broker, queue_name, 100)  # wants one Job, which fails by its deadline every time
    limits = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=60.0, stuck_s=120.0,
                    job_backoff_s=2.0, job_backoff_max_s=8.0)
    now = [0.0]  # the scaler's clock, driven here: each wait is exact, however slow the cluster
    the_scaler = scaler(broker, queue_name, namespace, limits=limits, template=FAILING, clock=lambda: now[0])
    jobs = Jobs(batch_api(), namespace=namespace, template=job_template.load(FAILING), timeout_s=5)
    with caplog.at_level(logging.INFO, logger="scaler"):
        for made, wait in enumerate((2.0, 4.0, 8.0), start=1):
            assert the_scaler.poll_once().create == 1
            wait_for(lambda made=made: [j.state for j in jobs.read()] == ["failed"] * made,
                     what=f"Job {made} to fail", timeout=60)
            # Replaced at once, without the backoff; held `wait` s (2, 4, 8 after each failure), then replaced.
            assert the_scaler.poll_once().kind == "backing_off"
            now[0] += wait - 0.1
            assert the_scaler.poll_once().create == 0
            now[0] += 0.1
        assert the_scaler.poll_once().create == 1
    assert len(worker_jobs(namespace)) == 4
    waiting = [r for r in caplog.records if r.getMessage() == "decision changed" and r.kind == "backing_off"]
    assert waiting and "recent Jobs failed or stuck, queue not shrinking, next Job in" in waiting[0].reason
    said = wait_for(lambda: recorded(namespace, "BackingOff"), what="a BackingOff Event")
    assert said[0].type == "Warning" and "backing off: 1 recent Jobs failed" in said[0].note
