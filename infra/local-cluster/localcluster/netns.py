"""The network namespace a one-node cluster lives in, joined to the host by a veth pair.

The kubelet refuses a loopback node address, and a node's ports (10250, 6443, Service
rules in iptables) must not collide with the host's. So the cluster's processes run in a
namespace of their own whose only link is a veth pair in a documentation range
(RFC 5737): the host end holds `host_ip`, the namespace's `eth0` holds `node_ip`, and
the namespace has no default route, so nothing in it can reach any other address.
"""

import ipaddress
import pathlib
import subprocess

RUN = pathlib.Path("/run/netns")
# `make up`'s namespace; test sessions take the /30s of another range, one each.
UP_NAME, UP_SUBNET = "kube-job", "198.51.100.0/30"
TEST_PREFIX, TEST_RANGE = "kube-job-t", "203.0.113.0/24"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class NodeNetwork:
    """Namespace `name` with the veth pair of `subnet` (a /30: host end first, then the node)."""

    def __init__(self, name: str, subnet: str) -> None:
        self.name, self.subnet = name, subnet
        hosts = list(ipaddress.ip_network(subnet).hosts())
        self.host_ip, self.node_ip = str(hosts[0]), str(hosts[1])
        self.path = RUN / name
        suffix = name.removeprefix("kube-job").lstrip("-")[-12:]  # a link name has at most 15 bytes
        self.veth = "kj-" + (suffix or "up")

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        """Add the namespace (fails if it exists: the name is the lock) and its link."""
        taken = overlapping_routes(self.subnet)
        if taken:
            # A documentation range may still be a machine's real network (some VMs use 192.0.2.0/24).
            raise RuntimeError(f"the host already routes {self.subnet}: {taken}; the node needs a free /30")
        ip("netns", "add", self.name)
        try:
            ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth)
            ip("link", "set", self.veth, "up")
            ip("-n", self.name, "addr", "add", f"{self.node_ip}/30", "dev", "eth0")
            ip("-n", self.name, "link", "set", "eth0", "up")
            ip("-n", self.name, "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.delete()
            raise

    def delete(self) -> bool:
        """Remove the namespace; its veth pair goes with it. True if it existed."""
        if not self.exists():
            return False
        ip("netns", "delete", self.name)
        return True

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run in the namespace. nsenter rather than `ip netns exec`, which also remounts
        /sys and so hides the cgroup mounts from the kubelet; it execs, so the pid stays."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl of the namespace's own network stack."""
        subprocess.run(self.argv(["sysctl", "-qw", f"{key}={value}"]), check=True)


def overlapping_routes(subnet: str) -> list[str]:
    """The host's IPv4 routes (any table, local addresses included) that overlap `subnet`."""
    wanted = ipaddress.ip_network(subnet)
    overlapping = []
    for route in ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = route.split()
        if words[0] in ("local", "broadcast", "unicast", "unreachable", "blackhole", "prohibit", "throw"):
            words = words[1:]
        if words[0] != "default" and ipaddress.ip_network(words[0], strict=False).overlaps(wanted):
            overlapping.append(route)
    return overlapping


def for_tests() -> NodeNetwork:
    """Create and return a namespace no other test session holds, with its own /30."""
    subnets = list(ipaddress.ip_network(TEST_RANGE).subnets(new_prefix=30))
    for index, subnet in enumerate(subnets):
        network = NodeNetwork(f"{TEST_PREFIX}{index}", str(subnet))
        if network.exists():
            continue
        try:
            network.create()
        except subprocess.CalledProcessError:
            continue  # another session took it first
        except RuntimeError:
            continue  # the host uses these addresses
        return network
    raise RuntimeError(f"every /30 of {TEST_RANGE} is taken by a {TEST_PREFIX}* namespace")
