"""Kubernetes Events the scaler records (events.k8s.io/v1), so `kubectl describe` says what it did.

As controllers record them: a `reportingController` of our own, the pod as the instance, and
a repeat of the same reason on the same object within SERIES_WINDOW_S joins the first Event's
series (its count grows by a patch) instead of adding an Event per poll. Events are posted
from a thread of their own: an apiserver that is slow or gone never delays a poll, and an
Event that cannot be posted is dropped (logged once per streak), as client-go drops them.
"""

import collections
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from kubernetes import client

from scaler.jobs import CreatedJob
from scaler.kube import KubeError, call

log = logging.getLogger(__name__)

# Every call this module makes to the API, as scaler/jobs.py declares its own.
PERMISSIONS = frozenset({("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "patch")})
CONTROLLER = "kube-job.io/scaler"
# client-go's recorder ends a series after six minutes without a repeat.
SERIES_WINDOW_S = 360.0
NOTE_LIMIT = 1024  # the apiserver refuses a longer note
_BACKLOG_LIMIT = 1000
# Series kept at once, least recently repeated dropped first: one per Job and reason would grow
# without end over the life of the scaler (client-go's event correlator keeps 4096 in an LRU).
SERIES_LIMIT = 4096


@dataclass(frozen=True)
class Reference:
    """The object an Event is about, as `regarding` names it."""

    apiVersion: str  # spelled as the API spells it, so asdict() is the reference
    kind: str
    name: str
    namespace: str
    uid: str = ""


@dataclass(frozen=True)
class _Event:
    regarding: Reference
    type: str
    reason: str
    action: str
    note: str
    kind: str  # what makes two notes "the same" for a series: the notes' numbers may differ


@dataclass
class _Series:
    name: str
    count: int
    last: float


def scaler_reference(*, namespace: str, pod_name: str, pod_uid: str) -> Reference:
    """The scaler's own Pod when the downward API named it, else its Deployment."""
    if pod_name:
        return Reference("v1", "Pod", pod_name, namespace, pod_uid)
    return Reference("apps/v1", "Deployment", "scaler", namespace)


class Recorder:
    """Posts the scaler's Events in `namespace` from a background thread; `close` waits for it."""

    def __init__(self, api: client.EventsV1Api, *, namespace: str, instance: str, scaler: Reference,
                 timeout_s: float, clock=time.monotonic) -> None:
        self._api, self._namespace, self._instance, self._scaler = api, namespace, instance, scaler
        self._timeout_s, self._clock = timeout_s, clock
        self._todo: queue.Queue[_Event | None] = queue.Queue(maxsize=_BACKLOG_LIMIT)
        self._series: collections.OrderedDict[tuple[str, str, str, str], _Series] = collections.OrderedDict()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def job_created(self, job: CreatedJob, note: str) -> None:
        """A Normal Event on the Job: why the scaler created it."""
        regarding = Reference("batch/v1", "Job", job.name, self._namespace, job.uid)
        self._put(_Event(regarding, "Normal", "CreatedForBacklog", "Create", note, kind=""))

    def job_warning(self, job_name: str, job_uid: str, reason: str, note: str) -> None:
        """A Warning Event on a worker Job: what keeps it from running."""
        regarding = Reference("batch/v1", "Job", job_name, self._namespace, job_uid)
        self._put(_Event(regarding, "Warning", reason, "Watch", note, kind=""))

    def warning(self, reason: str, note: str, *, action: str, kind: str) -> None:
        """A Warning Event on the scaler itself; repeats of the same `reason` and `kind` add to one series."""
        self._put(_Event(self._scaler, "Warning", reason, action, note, kind))

    def close(self, timeout_s: float = 5.0) -> None:
        """Post what is queued (for at most `timeout_s`), then stop the thread."""
        try:
            self._todo.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _put(self, event: _Event) -> None:
        try:
            self._todo.put_nowait(event)
        except queue.Full:
            log.debug("event dropped, too many queued", extra={"reason": event.reason})

    def _run(self) -> None:
        while (event := self._todo.get()) is not None:
            try:
                self._record(event)
            except KubeError as exc:
                if not self._failing:
                    log.warning("event not recorded", extra={"reason": event.reason, "error": str(exc)})
                self._failing = True
            else:
                self._failing = False

    def _record(self, event: _Event) -> None:
        key = (event.regarding.kind, event.regarding.name, event.reason, event.kind)
        now, series = self._clock(), self._series.get(key)
        if series is not None and now - series.last < SERIES_WINDOW_S:
            series.count, series.last = series.count + 1, now
            self._series.move_to_end(key)
            try:
                self._patch_series(series)
                return
            except KubeError as exc:
                if exc.status != 404:  # gone (an Event lives an hour): start a new one
                    raise
        self._series[key] = _Series(self._create(event), count=1, last=now)
        self._series.move_to_end(key)
        while len(self._series) > SERIES_LIMIT:
            self._series.popitem(last=False)

    def _create(self, event: _Event) -> str:
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            # Named as client-go names them: the object's name and the time in hex nanoseconds.
            "metadata": {"name": f"{event.regarding.name}.{time.time_ns():x}", "namespace": self._namespace},
            "eventTime": _micro_time(), "type": event.type, "reason": event.reason, "action": event.action,
            "note": event.note[:NOTE_LIMIT], "regarding": {k: v for k, v in asdict(event.regarding).items() if v},
            "reportingController": CONTROLLER, "reportingInstance": self._instance,
        }
        created = call("create event", self._api.create_namespaced_event, self._namespace, body,
                       timeout_s=self._timeout_s)
        return created.metadata.name

    def _patch_series(self, series: _Series) -> None:
        patch = {"series": {"count": series.count, "lastObservedTime": _micro_time()}}
        call("patch event", self._api.patch_namespaced_event, series.name, self._namespace, patch,
             timeout_s=self._timeout_s)


def _micro_time() -> str:
    # MicroTime wants six fractional digits, which isoformat() drops when they are all zero.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
