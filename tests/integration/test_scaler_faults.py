"""The real `python -m scaler` process while the services it reads fail, and after they return.

Each fault sits in a small proxy in front of the real service: an HTTP proxy before the
RabbitMQ management API (answers 500 or 401, answers too late, or stops listening) and a
TCP proxy before AMQP, PostgreSQL or the kube-apiserver (refuses connections, accepts them and
never answers, or goes silent). The shared control plane, RabbitMQ and PostgreSQL themselves are
never stopped. The test namespaces hold no kube-job-config, so even on a cluster with a node the
Jobs' pods never start: every Job the scaler makes stays unfinished and counts.
"""

import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes import client

from kubejob import message
from scaler import job_template
from scaler.decide import decide
from scaler.jobs import Jobs
from scaler.kube import KubeError
from tests.helpers import free_port, wait_for
from tests.helpers.broker import rows
from tests.helpers.metrics import Scrape
from tests.helpers.scaler_process import ScalerProcess, seconds
from tests.helpers.tcp_proxy import TcpProxy

POLL_S, MAX_BACKOFF_S, HTTP_TIMEOUT_S = 0.5, 4.0, 1.0
LEDGER_CONNECT_S = 2.0  # libpq's shortest connect_timeout, whatever DATABASE_TIMEOUT_SECONDS asks
THRESHOLD, PER_JOB, MAX_JOBS = 20, 500, 5
BEFORE, DURING = 600, 900  # published before the fault (2 Jobs) and while it lasts (3 in all)
FAILED_POLLS = 5  # enough for the waits to reach the cap: 1, 2, 4, 4 s


class ManagementProxy:
    """An HTTP proxy on 127.0.0.1 before the real management API, switched into faults at will."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.port, self.fault = upstream, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.listen()

    def listen(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                proxy._answer(self)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop_listening(self) -> None:
        """The port closes: connections are refused, as when the broker's pod is gone."""
        self._server.shutdown()
        self._server.server_close()

    def inject(self, fault: str) -> None:
        self._released.clear()
        self.fault = fault

    def clear(self) -> None:
        self.fault = None
        self._released.set()  # requests held by "slow" go on, to a client that gave up

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        fault = self.fault
        if fault == "slow":
            self._released.wait(HTTP_TIMEOUT_S * 3)  # past the scaler's timeout; clear() ends it early
        if fault in ("500", "401"):
            status, body = int(fault), b'{"error":"injected by the test"}'
        else:
            upstream = httpx.get(self.upstream + request.path, timeout=5,
                                 headers={"Authorization": request.headers.get("Authorization", "")})
            status, body = upstream.status_code, upstream.content
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # the scaler timed out and hung up, which is what "slow" is for


@pytest.fixture
def batch(kube_cluster) -> client.BatchV1Api:
    """The admin's view of the Jobs, straight to the apiserver (never through a proxy)."""
    return client.BatchV1Api(kube_cluster.api_client())


@pytest.fixture
def management_proxy(broker):
    proxy = ManagementProxy(broker.management_url)
    yield proxy
    proxy.clear()
    proxy.stop_listening()


@pytest.fixture
def apiserver_proxy(kube_cluster, tmp_path):
    """A proxy before the apiserver and a copy of the admin kubeconfig that goes through it."""
    kubeconfig = json.loads(kube_cluster.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    proxy = TcpProxy(urlsplit(cluster["server"]).port)
    # Same host, another port: the apiserver's certificate still matches 127.0.0.1.
    cluster["server"] = f"https://127.0.0.1:{proxy.port}"
    proxy.kubeconfig = tmp_path / "kubeconfig-via-proxy"
    proxy.kubeconfig.write_text(json.dumps(kubeconfig))
    yield proxy
    proxy.close()


@pytest.fixture
def amqp_proxy(broker):
    proxy = TcpProxy(broker.port)
    yield proxy
    proxy.close()


@pytest.fixture
def postgres_proxy():
    """A proxy before the ledger's PostgreSQL, and the ledger's DATABASE_URL through it."""
    url = os.environ["DATABASE_URL"]
    proxy = TcpProxy(urlsplit(url).port or 5432)
    proxy.database_url = proxy.through(url)
    yield proxy
    proxy.close()


@pytest.fixture
def start_scaler(kube_cluster, broker, tmp_path):
    """Start the real scaler with the test's settings; every one started is stopped after."""
    started: list[ScalerProcess] = []

    def start(*, queue: str, namespace: str, management_url: str | None = None, kubeconfig=None,
              amqp_port: int | None = None, database_url: str | None = None,
              log_level: str = "DEBUG") -> ScalerProcess:
        scaler = ScalerProcess(
            tmp_path / f"scaler-{len(started)}.log",
            QUEUE_NAME=queue, POD_NAMESPACE=namespace,
            # The ledger of the test session (tests/conftest.py), which publish_rows records uploads in.
            DATABASE_URL=database_url or os.environ["DATABASE_URL"], DATABASE_TIMEOUT_SECONDS=str(HTTP_TIMEOUT_S),
            KUBECONFIG=str(kubeconfig or kube_cluster.kubeconfig),
            RABBITMQ_MANAGEMENT_URL=management_url or broker.management_url,
            RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(amqp_port or broker.port),
            RABBITMQ_USER=broker.user, RABBITMQ_PASSWORD=broker.password,
            SCALER_POLL_SECONDS=str(POLL_S), SCALER_MAX_BACKOFF_SECONDS=str(MAX_BACKOFF_S),
            SCALER_HTTP_TIMEOUT_SECONDS=str(HTTP_TIMEOUT_S), SCALER_THRESHOLD=str(THRESHOLD),
            SCALER_MESSAGES_PER_JOB=str(PER_JOB), SCALER_MAX_JOBS=str(MAX_JOBS), LOG_LEVEL=log_level,
        )
        started.append(scaler)
        return scaler

    yield start
    for scaler in started:
        scaler.stop()


def jobs_wanted(depth: int, unfinished: int) -> int:
    """Unfinished Jobs once the scaler has acted on `depth`: what decide() adds to what exists."""
    return unfinished + decide(
        depth=depth, unfinished_jobs=unfinished, threshold=THRESHOLD, messages_per_job=PER_JOB,
        max_jobs=MAX_JOBS, backlog_age_s=0.0, small_backlog_wait_s=60.0,
    ).create


def job_count(batch: client.BatchV1Api, namespace: str) -> int:
    return len(batch.list_namespaced_job(namespace, label_selector=job_template.LABEL_SELECTOR).items)


def fault_then_recovery(*, broker, queue: str, namespace: str, batch, scaler: ScalerProcess,
                        inject, clear, reason: str, hold: Callable[[str], None] | None = None,
                        call_s: float = HTTP_TIMEOUT_S) -> None:
    """The scenario every fault goes through; `reason` must be in each failed poll's error, and a failed poll takes
    at most `call_s`. `hold` is given the queue of the upload published before the fault."""
    upload_id = broker.publish_rows(queue, rows(BEFORE))
    if hold is not None:
        hold(message.upload_queue(queue, upload_id))
    before = jobs_wanted(BEFORE, 0)
    wait_for(lambda: job_count(batch, namespace) == before, what=f"{before} Jobs before the fault")
    # The poll that made them logs them after their Events are sent: its line belongs before the mark.
    wait_for(lambda: sum(len(e.get("jobs_created", ())) for e in scaler.events()) == before,
             what=f"the scaler's line for the {before} Jobs", interval=0.1)

    mark = len(scaler.events())
    inject()
    broker.publish_rows(queue, rows(DURING))  # the backlog now needs another Job, which must wait

    def failures():
        failed = [e for e in scaler.events()[mark:] if e.get("message") == "poll failed"]
        return failed if len(failed) >= FAILED_POLLS else None
    failed = wait_for(failures, what=f"{FAILED_POLLS} failed polls", timeout=45, interval=0.2)
    during = scaler.events()[mark:]
    assert scaler.alive(), scaler.log_path.read_text()[-3000:]
    assert job_count(batch, namespace) == before
    assert not [e for e in during if e.get("jobs_created")], "Jobs were created during the fault"
    assert not [e for e in during if e.get("message") in ("poll crashed", "not json")], during
    assert all(reason in e["error"] for e in failed), [e["error"] for e in failed]
    # A follower at INFO reads a failure when it is new, not one line per poll.
    for previous, line in itertools.pairwise([None, *failed]):
        new = previous is None or (previous["error_type"], previous["error"]) != (line["error_type"], line["error"])
        assert line["level"] == ("WARNING" if new else "DEBUG"), failed
    assert_backs_off(failed, call_s=call_s)

    mark = len(scaler.events())
    clear()
    after = jobs_wanted(BEFORE + DURING, before)
    wait_for(lambda: job_count(batch, namespace) == after, what=f"{after} Jobs after the fault", timeout=30)

    def healthy_polls():
        # Every poll's line (at DEBUG when it has nothing new) carries the depth.
        polls = [e for e in scaler.events()[mark:] if "depth" in e]
        return polls if len(polls) >= 4 else None
    polls = wait_for(healthy_polls, what="healthy polls after the fault", timeout=30, interval=0.2)
    assert sum(len(p["jobs_created"]) for p in polls) == after - before
    assert polls[-1]["create"] == 0 and polls[-1]["unfinished_jobs"] == after
    assert job_count(batch, namespace) == after and scaler.alive()
    assert [e["level"] for e in scaler.events()[mark:] if e.get("message") == "poll recovered"] == ["INFO"]

    scrape = Scrape(scaler.metrics_url)
    assert scrape.value("kubejob_scaler_jobs_created_total") == after
    assert scrape.value("kubejob_scaler_jobs_unfinished", state="pending") == after  # their pods never start
    assert scrape.value("kubejob_scaler_queue_messages") == BEFORE + DURING
    errors = ("QueueReadError", "LedgerUnavailable", "KubeError")
    assert sum(scrape.value("kubejob_scaler_poll_errors_total", type=t) for t in errors) >= FAILED_POLLS


def assert_backs_off(failed: list[dict], *, call_s: float = HTTP_TIMEOUT_S) -> None:
    """Each wait is at least what the line before announced, and the waits grow to the cap."""
    waits = [e["retry_in_s"] for e in failed]
    assert waits[:4] == [POLL_S * 2, POLL_S * 4, POLL_S * 8, MAX_BACKOFF_S], waits
    gaps = [seconds(b) - seconds(a) for a, b in itertools.pairwise(failed)]
    for wait, gap in zip(waits, gaps, strict=False):
        # Never sooner than announced (1 ms for the timestamps' rounding), never much later:
        # a gap also holds the failing call itself, at most `call_s`.
        assert wait - 0.002 <= gap <= wait + call_s + 1.0, (waits, gaps)
    # The waits themselves grow: the last gap, less the longest its failing call takes, is more than the first.
    assert gaps[-1] - call_s > gaps[0], gaps


@pytest.fixture
def holding_consumer(broker):
    """`hold(queue)` starts a consumer that holds a few of its messages unacked: only while one exists does the
    scaler ask the management API."""
    stop, holders = threading.Event(), []

    def hold(queue: str) -> None:
        ready = threading.Event()

        def consume() -> None:
            with broker.connection() as conn:
                channel = conn.channel()
                channel.basic_qos(prefetch_count=10)
                channel.basic_consume(queue, lambda *_: None)
                ready.set()
                while not stop.is_set():
                    conn.process_data_events(time_limit=0.2)  # keeps its heartbeats going; acks nothing
        holders.append(threading.Thread(target=consume, daemon=True))
        holders[-1].start()
        ready.wait(10)
    yield hold
    stop.set()
    for holder in holders:
        holder.join(timeout=10)


@pytest.mark.parametrize(("fault", "reason"), [
    ("500", "HTTP 500"),
    ("401", "HTTP 401"),
    ("slow", f"timed out after {HTTP_TIMEOUT_S}s"),
    ("closed", "unreachable"),
])
def test_management_api_fault_creates_nothing_backs_off_and_recovers(
    broker, queue_name, namespace, batch, management_proxy, start_scaler, holding_consumer, fault, reason
):
    scaler = start_scaler(queue=queue_name, namespace=namespace, management_url=management_proxy.url)
    if fault == "closed":
        inject, clear = management_proxy.stop_listening, management_proxy.listen
    else:
        inject, clear = (lambda: management_proxy.inject(fault)), management_proxy.clear
    fault_then_recovery(broker=broker, queue=queue_name, namespace=namespace, batch=batch,
                        scaler=scaler, inject=inject, clear=clear, reason=reason, hold=holding_consumer)
    # Every failed read was a Warning Event on the scaler, one Event whose count grew.
    (warning,) = client.EventsV1Api(batch.api_client).list_namespaced_event(
        namespace, field_selector="reason=QueueReadFailed").items
    assert warning.type == "Warning" and reason in warning.note
    assert warning.series.count >= FAILED_POLLS and warning.reporting_controller == "kube-job.io/scaler"


@pytest.mark.parametrize("how", ["refuse", "blackhole", "freeze"])
@pytest.mark.parametrize(("service", "reason"), [("amqp", "AMQP"), ("apiserver", "unreachable"),
                                                 ("postgres", "ledger: ")])
def test_a_network_cut_creates_nothing_backs_off_and_recovers(
    broker, queue_name, namespace, batch, start_scaler, request, service, reason, how
):
    proxy = request.getfixturevalue(f"{service}_proxy")
    route = {"amqp": ("amqp_port", "port"), "apiserver": ("kubeconfig", "kubeconfig"),
             "postgres": ("database_url", "database_url")}[service]
    scaler = start_scaler(queue=queue_name, namespace=namespace, **{route[0]: getattr(proxy, route[1])})
    fault_then_recovery(broker=broker, queue=queue_name, namespace=namespace, batch=batch,
                        scaler=scaler, inject=lambda: proxy.cut(how), clear=proxy.restore, reason=reason,
                        call_s=LEDGER_CONNECT_S if service == "postgres" else HTTP_TIMEOUT_S)
    if service == "postgres":
        (warning,) = client.EventsV1Api(batch.api_client).list_namespaced_event(
            namespace, field_selector="reason=LedgerReadFailed").items
        assert warning.type == "Warning" and warning.note.startswith("ledger: ")


def test_a_silent_apiserver_times_out_at_a_fractional_timeout():
    """SCALER_HTTP_TIMEOUT_SECONDS is a float, and a float once reached no socket at all.

    The kubernetes client applies `_request_timeout` only when it is an int or a pair, so
    the scaler waited forever on an apiserver that accepted the connection and said nothing.
    """
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody answers
        configuration = client.Configuration(host=f"https://127.0.0.1:{silent.getsockname()[1]}")
        configuration.retries = 0
        jobs = Jobs(client.BatchV1Api(client.ApiClient(configuration)), namespace="default",
                    template=job_template.load(), timeout_s=0.5)
        outcome: list[BaseException] = []

        def count() -> None:
            try:
                jobs.unfinished()
            except BaseException as exc:
                outcome.append(exc)
        began = time.monotonic()
        call = threading.Thread(target=count, daemon=True)  # daemon: a hang must not block the run
        call.start()
        call.join(timeout=10)
        assert not call.is_alive(), "unfinished() still waiting after 10 s at a 0.5 s timeout"
    assert isinstance(outcome[0], KubeError) and "unreachable" in str(outcome[0]), outcome
    assert time.monotonic() - began < 2.5  # connect + read timeouts, with room


def decided(scaler: ScalerProcess, kind: str) -> float:
    """How many polls of the running scaler decided by rule `kind`, as its /metrics says (0 before it serves)."""
    try:
        return Scrape(scaler.metrics_url).value("kubejob_scaler_decisions_total", kind=kind)
    except httpx.HTTPError:
        return 0.0


def test_the_log_at_info_says_only_what_changed(broker, queue_name, namespace, batch, start_scaler):
    """Idle polls, a backlog and idle polls again: a handful of lines, none repeating the one before."""
    scaler = start_scaler(queue=queue_name, namespace=namespace, log_level="INFO")
    wait_for(lambda: decided(scaler, "queue_empty") >= 10, what="ten idle polls", interval=0.2)
    broker.publish_rows(queue_name, rows(BEFORE), confirm=False)
    wanted = jobs_wanted(BEFORE, 0)
    wait_for(lambda: job_count(batch, namespace) == wanted, what=f"{wanted} Jobs")
    enough = decided(scaler, "enough_jobs")
    wait_for(lambda: decided(scaler, "enough_jobs") >= enough + 10, what="ten polls with nothing new", interval=0.2)
    lines = scaler.events()
    said = [(e["message"], e.get("kind"), e.get("jobs_created")) for e in lines]
    assert not [e for e in lines if e["message"] in ("poll", "poll failed", "not json")], said
    assert len(lines) < 10, said
    assert all(a != b for a, b in itertools.pairwise(said)), said
    assert said[:2] == [("scaler started", None, None), ("decision changed", "queue_empty", [])]
    assert sum(len(e["jobs_created"]) for e in lines if e["message"] == "jobs created") == wanted
