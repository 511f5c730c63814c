"""A stand-in kubelet and scheduler: one Node on 127.0.0.1 whose pods run as local processes.

Run as `python -m localcluster.node_agent --state DIR` (from the repo root, which
is where pods run). It uses the admin kubeconfig in DIR because it plays both
the scheduler (it binds unscheduled pods to itself) and the kubelet. See
pod_env for how images map to commands and env values are rewritten.
"""

import argparse
import datetime
import json
import logging
import os
import pathlib
import signal
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from localcluster import log_server
from localcluster.control_plane import REPO_ROOT
from localcluster.pki import Pki
from localcluster.pod_runner import PodRunner

log = logging.getLogger("localcluster.node_agent")
HEARTBEAT_SECONDS = 10
SHUTDOWN_GRACE = 10


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Agent:
    """Registers the Node, keeps it alive and runs the pods bound to it."""

    def __init__(self, *, state: pathlib.Path, node: str) -> None:
        self.state, self.node = state, node
        self.api_client = config.new_client_from_config(str(state / "kubeconfig"))
        self.core = client.CoreV1Api(self.api_client)
        self.leases = client.CoordinationV1Api(self.api_client)
        self.server = self.api_client.configuration.host
        self.pki = Pki(state / "pki")
        self.runners: dict[str, PodRunner] = {}  # by pod uid
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        """Register, serve logs, heartbeat and watch pods until SIGTERM."""
        cert, key = self.pki.issue("node-agent-serving", common_name=f"system:node:{self.node}", server=True)
        self.port = log_server.serve(lookup=self._logs, cert=cert, key=key, ca=self.pki.ca_cert_path)
        self._register()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        # Tells `python -m localcluster up` and the test fixture that pods can now be placed.
        (self.state / "node-agent.ready").write_text(json.dumps({"node": self.node, "port": self.port}))
        while not self.stopping.is_set():
            try:
                self._watch()
            except Exception:
                if not self.stopping.is_set():
                    log.exception("pod watch failed; listing again")
                    self.stopping.wait(1)

    def _node_status(self) -> dict:
        stamp = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "node agent is posting ready status",
                                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "capacity": self._capacity(), "allocatable": self._capacity(),
                "nodeInfo": {"kubeletVersion": "local-node-agent", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "local://processes",
                             "kernelVersion": "", "osImage": "", "kubeProxyVersion": "", "machineID": "",
                             "systemUUID": "", "bootID": ""}}

    @staticmethod
    def _capacity() -> dict[str, str]:
        """This machine's cores and memory; nothing enforces them, they are for display."""
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return {"cpu": str(os.cpu_count()), "memory": f"{memory // 2**20}Mi", "pods": "110"}

    def _register(self) -> None:
        """Create the Node (or take over one left by an earlier run) and post its status."""
        try:
            self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                name=self.node, labels={"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"})))
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(self.node, {"status": self._node_status()})

    def _heartbeat(self) -> None:
        """Renew the node Lease and Ready condition, as the kubelet does."""
        while True:
            try:
                self._renew_lease()
                self.core.patch_node_status(self.node, {"status": self._node_status()})
            except Exception:
                log.exception("heartbeat failed")
            if self.stopping.wait(HEARTBEAT_SECONDS):
                return

    def _renew_lease(self) -> None:
        spec = client.V1LeaseSpec(holder_identity=self.node, lease_duration_seconds=40, renew_time=_now())
        try:
            self.leases.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": {
                "renewTime": _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.node), spec=spec))

    def _watch(self) -> None:
        """List every pod, then follow changes; each event reconciles one pod."""
        pods = self.core.list_pod_for_all_namespaces()
        for pod in pods.items:
            self._reconcile("ADDED", pod)
        stream = watch.Watch()
        for event in stream.stream(self.core.list_pod_for_all_namespaces,
                                   resource_version=pods.metadata.resource_version, timeout_seconds=300):
            if self.stopping.is_set():
                stream.stop()
                return
            self._reconcile(event["type"], event["object"])

    def _reconcile(self, kind: str, pod: client.V1Pod) -> None:
        """Bind an unscheduled pod, start one bound here, stop one being deleted."""
        uid, meta = pod.metadata.uid, pod.metadata
        if kind == "DELETED":
            with self.lock:
                runner = self.runners.pop(uid, None)
            if runner:
                runner.request_stop(0)
            return
        if not pod.spec.node_name:
            if not meta.deletion_timestamp and not pod.spec.scheduling_gates:
                self._bind(pod)
            return
        if pod.spec.node_name != self.node:
            return
        with self.lock:
            runner = self.runners.get(uid)
            terminal = pod.status and pod.status.phase in ("Succeeded", "Failed")
            if runner is None and not terminal and not meta.deletion_timestamp:
                runner = self.runners[uid] = PodRunner(api=self.core, pod=pod, state=self.state,
                                                       server=self.server, ca=self.pki.ca_cert_path,
                                                       cwd=REPO_ROOT)
                runner.start()
        if meta.deletion_timestamp:
            if runner:
                runner.request_stop(meta.deletion_grace_period_seconds or 0)
            else:
                self._delete_now(pod)  # nothing runs for it here: confirm the deletion at once

    def _bind(self, pod: client.V1Pod) -> None:
        """Place a pod on this node, the scheduler's job."""
        body = client.V1Binding(metadata=client.V1ObjectMeta(name=pod.metadata.name),
                                target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.node))
        try:
            # The response is a Status, which the client's V1Binding model cannot decode.
            self.core.create_namespaced_pod_binding(pod.metadata.name, pod.metadata.namespace, body,
                                                    _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):  # deleted meanwhile, or already bound
                raise

    def _delete_now(self, pod: client.V1Pod) -> None:
        """Finish deleting a pod that has no processes here, terminal first for the Job controller."""
        try:
            if pod.status is None or pod.status.phase not in ("Succeeded", "Failed"):
                self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                                      {"status": {"phase": "Failed"}})
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                            body=client.V1DeleteOptions(grace_period_seconds=0))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _logs(self, namespace: str, pod: str, container: str):
        """Find a container's log directory for the log server."""
        with self.lock:
            runner = next((r for r in self.runners.values() if (r.ns, r.name) == (namespace, pod)), None)
        if runner and container in runner.containers:
            return runner.containers[container].logs, lambda: runner.is_running(container)
        directory = self.state / "pods" / namespace / pod / container
        return (directory, lambda: False) if directory.is_dir() else None

    def shutdown(self) -> None:
        """Stop every pod's processes (their grace periods apply) and leave the watch."""
        self.stopping.set()
        with self.lock:
            runners = list(self.runners.values())
        for r in runners:
            # Capped, so the agent is gone well before `down` loses patience and kills it.
            r.request_stop(min(r.pod.spec.termination_grace_period_seconds or 0, SHUTDOWN_GRACE),
                           agent_stopping=True)
        for r in runners:
            r.thread.join(timeout=60)


def main() -> None:
    """Parse arguments, run the agent, and stop its pods on SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m localcluster.node_agent")
    parser.add_argument("--state", type=pathlib.Path, required=True)
    parser.add_argument("--node", default="local-node")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    agent = Agent(state=args.state.resolve(), node=args.node)
    failed = threading.Event()

    def run() -> None:
        try:
            agent.run()
        except Exception:
            log.exception("node agent failed")
            failed.set()
            agent.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: agent.stopping.set())
    # The watch blocks in a socket read, so it runs in a thread and the main thread waits
    # for a signal; leaving then ends that thread with the process.
    threading.Thread(target=run, name="watch", daemon=True).start()
    agent.stopping.wait()
    agent.shutdown()
    sys.exit(1 if failed.is_set() else 0)


if __name__ == "__main__":
    main()
