"""The node of a one-node cluster: containerd, the kubelet, kube-proxy, kube-scheduler and
CoreDNS, in the node's network namespace beside the control plane (control_plane.py).

Everything lives in the state dir except what the kernel keeps elsewhere: a cgroup named after
the namespace in each cgroup v1 hierarchy, the sysctls the kubelet sets on the host
(KUBELET_SYSCTLS), and the symlinks the kubelet puts in /var/log/containers. `down` takes all
of it back.
"""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import time

from localcluster import processes
from localcluster.control_plane import HERE, ControlPlane
from localcluster.pki import Pki

NODE_NAME = "kube-job-node"
POD_CIDR = "10.244.0.0/24"
DNS_DOMAIN = "cluster.local"
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
COMPONENTS = ["containerd", "coredns", "kube-scheduler", "kubelet", "kube-proxy"]
# The kubelet sets these on the host when protectKernelDefaults is off; `down` restores them.
KUBELET_SYSCTLS = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"]
CGROUPS = pathlib.Path("/sys/fs/cgroup")
CONTAINER_LOG_LINKS = pathlib.Path("/var/log/containers")
READY_TIMEOUT = 120.0


class Node:
    """The node of `cp`, which must run in a network namespace."""

    def __init__(self, cp: ControlPlane) -> None:
        if cp.network is None:
            raise ValueError("a node needs the control plane in its network namespace")
        self.cp, self.network = cp, cp.network
        self.dir = cp.state / "node"
        self.socket = self.dir / "containerd" / "containerd.sock"
        self.cgroup = "kube-job-" + self.network.name  # the kubelet's cgroupRoot

    @property
    def bins(self) -> pathlib.Path:
        return pathlib.Path(self.cp.config["bin_dir"])

    def up(self) -> None:
        """Start every component and load the images; return once the Node is Ready."""
        if all(processes.running(c, state=self.cp.state) for c in COMPONENTS):
            self.wait_ready()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        pki = Pki(self.cp.state / "pki")
        self._save_sysctls()
        self._make_cgroup()
        # Replies between two pods behind a Service cross the bridge: iptables must see them.
        self.network.sysctl("net.bridge.bridge-nf-call-iptables", "1")
        self._start_containerd()
        subprocess.run([str(HERE / "images.sh"), "load", str(self.socket)], check=True)
        # The apiserver reaches the kubelet (logs, exec, port-forward) as user kube-apiserver.
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kube-apiserver-kubelet-api-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver"}]}))
        self._start_coredns()
        self._start_scheduler(pki)
        self._start_kubelet(pki)
        self._start_kube_proxy(pki)
        self.wait_ready()

    def _spawn(self, name: str, argv: list[str]) -> None:
        # The shim, runc and the CNI plugins are found on PATH.
        env = dict(os.environ, PATH=f"{self.bins}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
        processes.spawn(name, self.network.argv(argv), state=self.cp.state, tied=self.cp.tied, env=env)

    def _write(self, name: str, text: str) -> pathlib.Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def _start_containerd(self) -> None:
        root = self.dir / "containerd"
        (self.dir / "cni").mkdir(exist_ok=True)
        self._write("cni/10-kube-job.conflist", json.dumps({
            "cniVersion": "1.0.0", "name": "kube-job", "plugins": [
                # ipMasq: what leaves the bridge carries the node's address, so the host's replies
                # come back over the veth instead of following the host's default route.
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.dir / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2))
        config = self._write("containerd.toml", f"""version = 3
root = '{root}/root'
state = '{root}/state'
# NRI would listen in /var/run/nri, and opt would install into /opt: neither is used.
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.opt']

[grpc]
  address = '{self.socket}'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10.1'

[plugins.'io.containerd.cri.v1.runtime']
  # This machine may not raise a process's OOM priority (no CAP_SYS_RESOURCE): without this,
  # runc fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_cdi = false
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{CNI_BIN}']
  conf_dir = '{self.dir / "cni"}'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  Root = '{root}/runc'
""")
        self._spawn("containerd", [str(self.bins / "containerd"), "--config", str(config)])
        wait(lambda: self.socket.exists(), what="containerd's socket", log=self.cp.state / "logs" / "containerd.log")

    def _start_coredns(self) -> None:
        corefile = self._write("Corefile", f""".:53 {{
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes {DNS_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.cp.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
""")
        self._spawn("coredns", [str(self.bins / "coredns"), "-conf", str(corefile)])

    def _start_scheduler(self, pki: Pki) -> None:
        path = self.cp.component_kubeconfig(pki, "scheduler", user="system:kube-scheduler")
        self._spawn("kube-scheduler", [
            str(self.bins / "kube-scheduler"), f"--kubeconfig={path}", f"--authentication-kubeconfig={path}",
            f"--authorization-kubeconfig={path}", "--leader-elect=false", "--bind-address=127.0.0.1"])

    def _start_kubelet(self, pki: Pki) -> None:
        path = self.cp.component_kubeconfig(pki, "kubelet", user=f"system:node:{NODE_NAME}", org="system:nodes")
        cert, key = pki.issue("kubelet-serving", common_name=f"system:node:{NODE_NAME}", server=True,
                              ips=(self.network.node_ip,))
        config = self._write("kubelet.json", json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # This machine has cgroup v1, which the kubelet refuses unless told.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": "/" + self.cgroup,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.network.node_ip, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(cert), "tlsPrivateKeyFile": str(key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki.ca_cert_path)}},
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [self.network.node_ip], "clusterDomain": DNS_DOMAIN, "resolvConf": "",
            "podLogsDir": str(self.dir / "pod-logs"),
            # No registry can give an image back, so images are never collected, and a full disk
            # evicts pods only when it is really full.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        }, indent=2))
        self._spawn("kubelet", [
            str(self.bins / "kubelet"), f"--config={config}", f"--kubeconfig={path}",
            f"--root-dir={self.dir / 'kubelet'}", f"--node-ip={self.network.node_ip}",
            f"--hostname-override={NODE_NAME}"])

    def _start_kube_proxy(self, pki: Pki) -> None:
        path = self.cp.component_kubeconfig(pki, "kube-proxy", user="system:kube-proxy")
        config = self._write("kube-proxy.json", json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(path)}, "mode": "iptables", "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME, "bindAddress": self.network.node_ip,
            "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            # 0 leaves the host-wide conntrack table size and timeouts as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=2))
        self._spawn("kube-proxy", [str(self.bins / "kube-proxy"), f"--config={config}"])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the Node reports Ready (containerd, CNI and kubelet all up)."""
        def ready() -> bool:
            for name in COMPONENTS:
                if not processes.running(name, state=self.cp.state):
                    raise RuntimeError(f"{name} exited; see {self.cp.state / 'logs' / name}.log")
            out = self.cp.kubectl("get", "node", NODE_NAME, "--ignore-not-found", "-o",
                                  "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
            return out.strip() == "True"
        wait(ready, what=f"Node {NODE_NAME} to be Ready", timeout=timeout, log=self.cp.state / "logs" / "kubelet.log")

    def _save_sysctls(self) -> None:
        path = self.dir / "host-sysctls.json"
        if not path.exists():
            path.write_text(json.dumps({k: (pathlib.Path("/proc/sys") / k).read_text().strip()
                                        for k in KUBELET_SYSCTLS}))

    def _restore_sysctls(self) -> None:
        path = self.dir / "host-sysctls.json"
        if path.exists():
            for key, value in json.loads(path.read_text()).items():
                (pathlib.Path("/proc/sys") / key).write_text(value)
            path.unlink()

    def _hierarchies(self, *, unified: bool = False) -> list[pathlib.Path]:
        """The cgroup v1 hierarchies (runc also makes its cgroups in the v2 one beside them)."""
        return [h for h in CGROUPS.iterdir() if h.is_dir() and not h.is_symlink() and (unified or h.name != "unified")]

    def _make_cgroup(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy before it starts."""
        for hierarchy in self._hierarchies():
            group = hierarchy / self.cgroup
            group.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # an empty cpuset takes no process: inherit the parent's
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (group / key).write_text((hierarchy / key).read_text())

    def down(self) -> list[str]:
        """Stop the components and every container, and take back what they set up."""
        stopped = [c for c in reversed(COMPONENTS[1:]) if processes.stop(c, state=self.cp.state)]
        self._kill_containers()
        if processes.stop("containerd", state=self.cp.state):
            stopped.append("containerd")
        self._kill_shims()
        unmount_under(self.cp.state)
        self._remove_cgroup()
        for link in CONTAINER_LOG_LINKS.glob("*.log"):
            if link.is_symlink() and str(os.readlink(link)).startswith(str(self.dir)):
                link.unlink()
        self._restore_sysctls()
        return stopped

    def _kill_containers(self) -> None:
        """SIGKILL every process in the kubelet's cgroup until none is left."""
        memory = CGROUPS / "memory" / self.cgroup
        for _ in range(50):
            pids = {int(p) for f in memory.rglob("cgroup.procs") for p in f.read_text().split()}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        """The runc shims outlive containerd by design; ours name its socket on their command line."""
        for proc in pathlib.Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in argv:
                processes.signal_group(int(proc.name), signal.SIGKILL)

    def _remove_cgroup(self) -> None:
        for hierarchy in self._hierarchies(unified=True):
            group = hierarchy / self.cgroup
            if group.exists():
                for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    child.rmdir()
                group.rmdir()


def unmount_under(directory: pathlib.Path) -> None:
    """Unmount every mount at or below `directory`, deepest first (containers' root filesystems,
    the kubelet's volumes, pod network namespaces)."""
    prefix = str(directory.resolve())
    points = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def wait(predicate, *, what: str, log: pathlib.Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; see {log}")
