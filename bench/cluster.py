"""A local Kubernetes for the benchmarks that create Jobs (see infra/local-cluster)."""

import collections
import contextlib
import glob
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from kubernetes import client, config

import tests.helpers  # noqa: F401 - puts infra/local-cluster, where the launcher is, on the path
from tests.helpers.kube import KubeCluster, deploy

from localcluster import netns
from localcluster.control_plane import ControlPlane, bin_dir
from localcluster.node import CGROUPS, Node
from localcluster.stack import build_images


@contextlib.contextmanager
def control_plane() -> Iterator[tuple[Path, client.ApiClient]]:
    """A fresh control plane alone on loopback for the block; yields its kubeconfig and an admin client."""
    bin_dir()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        plane = ControlPlane(Path(state), tied=True)
        try:
            plane.up()
            yield plane.kubeconfig, config.new_client_from_config(str(plane.kubeconfig))
        finally:
            plane.down()


@contextlib.contextmanager
def node() -> Iterator[KubeCluster]:
    """A fresh one-node cluster in a network namespace of its own for the block, as the tests' kube_node."""
    bins = bin_dir()
    build_images()
    with tempfile.TemporaryDirectory(prefix="kube-job-bench-") as state:
        network = netns.for_tests()
        plane = ControlPlane(Path(state), tied=True, network=network)
        began = time.monotonic()
        try:
            plane.up()
            Node(plane).up()
            yield KubeCluster(plane, bins, time.monotonic() - began)
        finally:
            Node(plane).down()
            plane.down()
            network.delete()


@dataclass
class Deployment:
    """infra/k8s deployed in a namespace of the cluster, its producer reached through a port-forward."""

    kube: KubeCluster
    namespace: str
    api: httpx.Client

    def scale_scaler(self, replicas: int) -> None:
        self.kube.kubectl("scale", "-n", self.namespace, "deployment/scaler", f"--replicas={replicas}")

    def upload(self, path: Path) -> str:
        """POST the file and return its status URL; raises, with the producer's answer, unless it says 200."""
        with open(path, "rb") as f:
            response = self.api.post("/upload", files={"file": (path.name, f, "text/csv")})
        if response.status_code != 200:
            raise RuntimeError(f"the upload got {response.status_code}: {response.text}; rabbitmq-0 restarts: "
                               f"{self.restarts('rabbitmq-0')}")
        return response.json()["status_url"]

    def status(self, status_url: str) -> dict:
        return self.api.get(status_url).raise_for_status().json()

    def restarts(self, pod: str) -> str:
        """How often `pod`'s containers restarted and why they last ended, e.g. "1 (OOMKilled)"."""
        read = client.CoreV1Api(self.kube.api_client()).read_namespaced_pod(pod, self.namespace)
        said = []
        for container in read.status.container_statuses or []:
            ended = container.last_state.terminated if container.last_state else None
            said.append(f"{container.restart_count}" + (f" ({ended.reason})" if ended else ""))
        return ", ".join(said) or "none"


class PodCpu:
    """CPU seconds that each app's pods in a namespace used, read from the pods' cgroups (cgroup v1).

    Sampled every second, so that a pod which ended (a finished worker Job) keeps its last reading.
    """

    def __init__(self, kube: KubeCluster, namespace: str) -> None:
        self._core = client.CoreV1Api(kube.api_client())
        self._namespace = namespace
        self._pods: dict[str, tuple[str, float]] = {}  # uid -> (its `app` label, CPU seconds)
        self._paths: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_every_second, daemon=True)
        self._thread.start()

    def by_app(self) -> dict[str, float]:
        """CPU seconds per `app` label until now."""
        self._sample()
        totals: collections.defaultdict[str, float] = collections.defaultdict(float)
        with self._lock:
            for app, seconds in self._pods.values():
                totals[app] += seconds
        return dict(totals)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            for pod in self._core.list_namespaced_pod(self._namespace).items:
                uid = pod.metadata.uid
                if uid not in self._paths:
                    # Under whichever node's cgroup root (localcluster.node): a pod's uid is unique.
                    found = glob.glob(str(CGROUPS / "cpuacct" / "*" / "kubepods" / "**" / f"pod{uid}" /
                                          "cpuacct.usage"), recursive=True)
                    if not found:
                        continue
                    self._paths[uid] = found[0]
                try:
                    with open(self._paths[uid]) as f:
                        seconds = int(f.read()) / 1e9
                except FileNotFoundError:  # the pod ended since the listing: keep the last reading
                    continue
                self._pods[uid] = (pod.metadata.labels.get("app", "other"), seconds)


@contextlib.contextmanager
def deployed(kube: KubeCluster, **settings: str) -> Iterator[Deployment]:
    """infra/k8s as shipped, `settings` put in kube-job-config, in a fresh namespace for the block."""
    namespace = kube.namespace()
    try:
        token = deploy(kube, namespace, **settings)
        with kube.port_forward("service/producer", 8000, namespace=namespace) as port, \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=None,
                             headers={"Authorization": f"Bearer {token}"}) as api:
            yield Deployment(kube, namespace, api)
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false")
