"""Start etcd, kube-apiserver and kube-controller-manager as local processes and stop them.

Alone (the tests' apiserver-only cluster, like envtest) they listen on 127.0.0.1; as part of a
one-node cluster they run in the node's network namespace and listen on the node's address.
"""

import base64
import json
import os
import pathlib
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from localcluster import processes
from localcluster.netns import NodeNetwork
from localcluster.pki import Pki

HERE = pathlib.Path(__file__).resolve().parent.parent
REPO_ROOT = HERE.parent.parent
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager"]
# Only what kube-job uses: Jobs and their TTL cleanup, Deployments, the RabbitMQ StatefulSet and
# its volume claim, Services' endpoints, and what keeps namespaces and ServiceAccounts working
# (the kube-root-ca.crt ConfigMap that every projected token volume names); names as in
# cmd/kube-controller-manager/names.
CONTROLLERS = ["job-controller", "ttl-after-finished-controller", "garbage-collector-controller",
               "deployment-controller", "replicaset-controller", "statefulset-controller",
               "persistentvolume-binder-controller", "endpointslice-controller",
               "serviceaccount-controller", "serviceaccount-token-controller", "namespace-controller",
               "root-ca-certificate-publisher-controller"]
SERVICE_CIDR = "10.0.0.0/24"
# In the node's namespace nothing else listens, so the well-known ports are free.
NODE_PORTS = {"etcd_port": 2379, "etcd_peer_port": 2380, "apiserver_port": 6443}
READY_TIMEOUT = 90.0


def bin_dir() -> pathlib.Path:
    """Build the binaries if needed (build.sh is idempotent) and return their directory."""
    out = subprocess.run([str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def kubeconfig(*, server: str, ca: pathlib.Path, user: str, cert: pathlib.Path | None = None,
               key: pathlib.Path | None = None, token: str | None = None) -> str:
    """Return a kubeconfig (JSON is YAML) with credentials embedded, so it can be copied anywhere."""
    def b64(path: pathlib.Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()
    creds = {"token": token} if token else {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user, "namespace": "default"}}],
    }, indent=2)


class ControlPlane:
    """The control plane whose state (certs, etcd data, logs, pids) lives in `state`."""

    def __init__(self, state: pathlib.Path, *, tied: bool = False, network: NodeNetwork | None = None) -> None:
        self.state = state.resolve()
        self.tied = tied  # processes end with ours (tests) instead of outliving it (make up)
        self.network = network
        self.address = network.node_ip if network else "127.0.0.1"
        self.config_path = self.state / "cluster.json"
        self.kubeconfig = self.state / "kubeconfig"

    @property
    def config(self) -> dict:
        """Ports and paths chosen by the last `up`."""
        return json.loads(self.config_path.read_text())

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.config['apiserver_port']}"

    def up(self, *, apiserver_port: int | None = None) -> float:
        """Start every component not already running, wait for /readyz; return seconds taken."""
        began = time.monotonic()
        if all(processes.running(c, state=self.state) for c in COMPONENTS) and self.config_path.exists():
            self.wait_ready()
            return time.monotonic() - began
        self.down()
        bins = bin_dir()
        pki = Pki(self.state / "pki")
        ports = NODE_PORTS if self.network else {
            "etcd_port": processes.free_port(), "etcd_peer_port": processes.free_port(),
            "apiserver_port": apiserver_port or processes.free_port()}
        ports = {**ports, "bin_dir": str(bins)}
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(ports, indent=2))
        self._start_etcd(bins, ports)
        self._start_apiserver(bins, ports, pki)
        admin_cert, admin_key = pki.issue("admin", common_name="kube-job-admin", org="system:masters", client=True)
        self.kubeconfig.write_text(kubeconfig(server=self.server, ca=pki.ca_cert_path, user="admin",
                                              cert=admin_cert, key=admin_key))
        self.kubeconfig.chmod(0o600)  # it holds the admin's private key
        self.wait_ready()
        self._start_controller_manager(bins, pki)
        return time.monotonic() - began

    def spawn(self, name: str, argv: list[str]) -> int:
        """Start a component of this cluster, in the node's namespace if there is one."""
        return processes.spawn(name, self.network.argv(argv) if self.network else argv,
                               state=self.state, tied=self.tied)

    def _start_etcd(self, bins: pathlib.Path, ports: dict) -> None:
        client, peer = f"http://127.0.0.1:{ports['etcd_port']}", f"http://127.0.0.1:{ports['etcd_peer_port']}"
        self.spawn("etcd", [
            str(bins / "etcd"), "--name=local", f"--data-dir={self.state / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}", "--log-level=warn",
            # A throwaway single-member cluster: losing the last writes on a crash is fine,
            # and without fsync the apiserver stays quick on a slow shared disk.
            "--unsafe-no-fsync"])

    def _start_apiserver(self, bins: pathlib.Path, ports: dict, pki: Pki) -> None:
        serving_cert, serving_key = pki.issue("apiserver", common_name="kube-apiserver", server=True,
                                              ips=(self.address,))
        kubelet_cert, kubelet_key = pki.issue("apiserver-kubelet-client", common_name="kube-apiserver",
                                              client=True)
        sa_key = pki.service_account_key()
        # On loopback the `kubernetes` Endpoints would hold 127.0.0.1, which validation rejects;
        # on a node they hold its address, which pods reach through the Service.
        reconciler = [] if self.network else ["--endpoint-reconciler-type=none"]
        self.spawn("kube-apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ports['etcd_port']}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}",
            f"--secure-port={ports['apiserver_port']}", f"--cert-dir={pki.dir}",
            f"--tls-cert-file={serving_cert}", f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={pki.ca_cert_path}", "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
            f"--kubelet-client-certificate={kubelet_cert}", f"--kubelet-client-key={kubelet_key}",
            f"--kubelet-certificate-authority={pki.ca_cert_path}",
            "--kubelet-preferred-address-types=InternalIP",
            *reconciler, "--profiling=false",
            # It taints new Nodes not-ready, and without the node-lifecycle controller nothing
            # would ever lift the taint from the kubelet's Node.
            "--disable-admission-plugins=TaintNodesByCondition"])

    def _start_controller_manager(self, bins: pathlib.Path, pki: Pki) -> None:
        path = self.component_kubeconfig(pki, "controller-manager", user="system:kube-controller-manager")
        self.spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={path}",
            f"--authentication-kubeconfig={path}", f"--authorization-kubeconfig={path}",
            f"--controllers={','.join(CONTROLLERS)}", "--leader-elect=false",
            # Each controller acts as its own ServiceAccount, as in a real cluster, so the
            # bootstrap RBAC roles (system:controller:job-controller, ...) are exercised.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key()}",
            f"--root-ca-file={pki.ca_cert_path}", "--secure-port=0"])

    def component_kubeconfig(self, pki: Pki, name: str, *, user: str, org: str | None = None) -> pathlib.Path:
        """Write `name`.kubeconfig with a client certificate for `user` (CN) in group `org` (O)."""
        cert, key = pki.issue(name, common_name=user, org=org, client=True)
        path = self.state / f"{name}.kubeconfig"
        path.write_text(kubeconfig(server=self.server, ca=pki.ca_cert_path, user=name, cert=cert, key=key))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run kubectl as the admin; return its output, raising with its errors if it fails."""
        result = subprocess.run([str(pathlib.Path(self.config["bin_dir"]) / "kubectl"), "--kubeconfig",
                                 str(self.kubeconfig), *args], input=input, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll /readyz until it answers ok; raise with the apiserver log's tail if it never does."""
        ctx = ssl.create_default_context(cafile=str(self.state / "pki" / "ca.crt"))
        ctx.load_cert_chain(self.state / "pki" / "admin.crt", self.state / "pki" / "admin.key")
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            for name in COMPONENTS[:2]:
                if not processes.running(name, state=self.state):
                    raise RuntimeError(f"{name} exited; see {self.state / 'logs' / name}.log")
            try:
                with urllib.request.urlopen(self.server + "/readyz", context=ctx, timeout=5) as resp:
                    if resp.read() == b"ok":
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s ({last}); see {self.state / 'logs'}")

    def down(self) -> list[str]:
        """Stop every component, the controller manager first; return the names that ran."""
        return [c for c in reversed(COMPONENTS) if processes.stop(c, state=self.state)]

    def status(self) -> dict[str, int | None]:
        """Map each component to its pid, or None when it is not running."""
        return {c: processes.running(c, state=self.state) for c in COMPONENTS}


def default_state() -> pathlib.Path:
    """The state directory: $KUBE_JOB_STATE or .run/ in the repo root."""
    return pathlib.Path(os.environ.get("KUBE_JOB_STATE", REPO_ROOT / ".run"))
