"""Run one pod's containers as local process groups and report their state to the apiserver."""

import logging
import pathlib
import shutil
import signal
import threading
import time

from kubernetes import client
from kubernetes.client.rest import ApiException

from localcluster import pod_env
from localcluster.container import Container, now
from localcluster.processes import signal_group

log = logging.getLogger(__name__)
TOKEN_SECONDS = 24 * 3600  # longer than any test or demo run, so tokens need no refresh
MAX_BACKOFF = 30.0


class PodRunner:
    """Owns the processes of one pod bound to this node, from start to deletion."""

    def __init__(self, *, api: client.CoreV1Api, pod: client.V1Pod, state: pathlib.Path,
                 server: str, ca: pathlib.Path, cwd: pathlib.Path) -> None:
        self.api, self.pod, self.server, self.ca, self.cwd = api, pod, server, ca, cwd
        self.ns, self.name = pod.metadata.namespace, pod.metadata.name
        self.dir = state / "pods" / self.ns / self.name
        self.containers = {c.name: Container(c, self.dir / c.name, state=state, uid=pod.metadata.uid)
                           for c in pod.spec.containers}
        self.stop_grace: float | None = None  # set when the pod is being deleted or the agent stops
        self.agent_stopping = False
        self.started = now()
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    def start(self) -> None:
        """Start the pod in a thread of its own; old logs of a pod with the same name go."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.thread.start()

    def request_stop(self, grace: float, *, agent_stopping: bool = False) -> None:
        """Ask the pod to stop, `grace` seconds before SIGKILL: it is deleted, or the agent stops."""
        if self.stop_grace is None:
            self.agent_stopping, self.stop_grace = agent_stopping, grace

    def _run(self) -> None:
        try:
            if self._prepare():
                self._supervise()
            if self.stop_grace is not None and self.agent_stopping:
                # As on a node shutdown: a pod that restarts comes back when the agent does;
                # one that does not is Failed, so the Job controller replaces it.
                self._kill(report=self.pod.spec.restart_policy in ("Never", "OnFailure"))
            elif self.stop_grace is not None:
                self._kill(report=True)
                self.api.delete_namespaced_pod(self.name, self.ns, body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.pod.metadata.uid)))
        except ApiException as exc:
            if exc.status not in (404, 409):  # the pod is gone or replaced: nothing left to report
                log.exception("pod %s/%s: API error", self.ns, self.name)
        except Exception:
            log.exception("pod %s/%s failed in the agent", self.ns, self.name)
            self._abandon()

    def _abandon(self) -> None:
        """After a bug in the agent: leave no process behind and mark the pod Failed."""
        for c in self.containers.values():
            if c.proc:
                signal_group(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
                c.reap()
        self._report("Failed")

    def _prepare(self) -> bool:
        """Resolve commands and env, retrying config errors as the kubelet does; False if stopped."""
        while self.stop_grace is None:
            try:
                kubeconfig = self._service_account_kubeconfig()
                resolver = pod_env.EnvResolver(self.api, self.pod)
                for c in self.containers.values():
                    c.argv = pod_env.command_for(c.spec)
                    c.env = pod_env.process_env(resolver.environment(c.spec), pod_name=self.name,
                                                kubeconfig=kubeconfig)
                return True
            except pod_env.ImageNotMapped as exc:
                self._waiting("ErrImageNeverPull", str(exc))
            except (ApiException, KeyError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                self._waiting("CreateContainerConfigError", f"{type(exc).__name__}: {reason}")
            time.sleep(3)
        return False

    def _waiting(self, reason: str, message: str) -> None:
        for c in self.containers.values():
            c.state = {"waiting": {"reason": reason, "message": message}}
        self._report("Pending")

    def _service_account_kubeconfig(self) -> str | None:
        """Write a kubeconfig holding a token of the pod's ServiceAccount, bound to this pod."""
        spec = self.pod.spec
        if not spec.service_account_name or spec.automount_service_account_token is False:
            return None
        ref = client.V1BoundObjectReference(kind="Pod", api_version="v1", name=self.name,
                                            uid=self.pod.metadata.uid)
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=TOKEN_SECONDS, bound_object_ref=ref))
        token = self.api.create_namespaced_service_account_token(
            spec.service_account_name, self.ns, request).status.token
        from localcluster.control_plane import kubeconfig  # late: keeps module import light
        path = self.dir / "kubeconfig"
        path.write_text(kubeconfig(server=self.server, ca=self.ca, token=token,
                                   user=f"system:serviceaccount:{self.ns}:{spec.service_account_name}"))
        path.chmod(0o600)
        return str(path)

    def _supervise(self) -> None:
        """Run containers until they are done for good or the pod is deleted."""
        policy = self.pod.spec.restart_policy or "Always"
        for c in self.containers.values():
            c.start(self.cwd)
        log.info("pod %s/%s started: %s", self.ns, self.name,
                 {c.name: c.proc.pid for c in self.containers.values()})
        self._report("Running")
        done: dict[str, int] = {}
        while self.stop_grace is None and len(done) < len(self.containers):
            changed = False
            for c in self.containers.values():
                if c.name in done:
                    continue
                if c.proc is None and time.monotonic() >= c.not_before:
                    c.restarts, changed = c.restarts + 1, True
                    c.start(self.cwd)
                code = c.reap()
                if code is None:
                    changed = c.probe() or changed
                    continue
                changed = True
                if policy == "Always" or (policy == "OnFailure" and code != 0):
                    # Back off like the kubelet's CrashLoopBackOff, only with a shorter ceiling.
                    c.not_before = time.monotonic() + min(2.0 ** c.restarts, MAX_BACKOFF)
                    c.last_state = c.state
                    c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": f"exited with {code}; restarting"}}
                else:
                    done[c.name] = code
            if changed:
                self._report(self._phase(done))
        if done:
            log.info("pod %s/%s ended: exit codes %s", self.ns, self.name, done)
            time.sleep(0.3)

    def _phase(self, done: dict[str, int]) -> str:
        if len(done) < len(self.containers):
            return "Running"
        return "Succeeded" if all(code == 0 for code in done.values()) else "Failed"

    def _kill(self, *, report: bool) -> None:
        """SIGTERM every container's group, SIGKILL what is left after the grace period."""
        live = [c for c in self.containers.values() if c.proc]
        for c in live:
            signal_group(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + (self.stop_grace or 0)
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in live):
            time.sleep(0.1)
        for c in live:
            signal_group(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
            c.reap()
        # A container that never ran counts as failed, so the pod always ends in a terminal phase.
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in self.containers.values()]
        if report:
            self._report("Succeeded" if not any(codes) else "Failed")

    def _report(self, phase: str) -> None:
        """Write the pod's status: phase, conditions and one entry per container."""
        ready = phase == "Running" and all(c.status()["ready"] for c in self.containers.values())
        stamp = now()
        conditions = [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in (
            ("PodReadyToStartContainers", "True"), ("Initialized", "True"),
            ("ContainersReady", str(ready)), ("Ready", str(ready)))]
        status = {"phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                  "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": self.started,
                  "conditions": conditions,
                  "containerStatuses": [c.status() for c in self.containers.values()]}
        try:
            self.api.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
        except ApiException as exc:
            if exc.status == 404:
                self.request_stop(0)  # the pod is gone, so are its processes
            else:  # the next change reports again; the processes matter more than one status
                log.warning("pod %s/%s: status not written: %s %s", self.ns, self.name, exc.status, exc.reason)

    def is_running(self, container: str) -> bool:
        """True while `container` has a live process, so a followed log stays open."""
        c = self.containers.get(container)
        return bool(c and (c.proc or (self.stop_grace is None and "terminated" not in c.state)))
