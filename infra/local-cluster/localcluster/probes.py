"""Readiness and liveness probes (httpGet, tcpSocket, exec) against a container's local process."""

import socket
import subprocess
import time
import urllib.error
import urllib.request

from kubernetes import client


def _port(port: int | str, container: client.V1Container) -> int:
    """Resolve a probe's port, which may name one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    named = {p.name: p.container_port for p in container.ports or [] if p.name}
    if port not in named:
        raise ValueError(f"probe port {port!r} is not a named port of container {container.name}")
    return named[port]


def passes(probe: client.V1Probe, container: client.V1Container, env: dict[str, str]) -> bool:
    """Run the probe once; True if it succeeds within its timeout."""
    timeout = probe.timeout_seconds or 1
    try:
        if probe.http_get:
            get = probe.http_get
            # Processes listen on this machine, so the pod's IP is 127.0.0.1 (as in its status).
            url = f"http://127.0.0.1:{_port(get.port, container)}{get.path or '/'}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return 200 <= response.status < 400
        if probe.tcp_socket:
            with socket.create_connection(("127.0.0.1", _port(probe.tcp_socket.port, container)), timeout):
                return True
        if probe._exec:
            return subprocess.run(probe._exec.command, env=env, timeout=timeout, capture_output=True).returncode == 0
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, ValueError):
        return False
    return True  # a probe of a kind we do not know is not held against the container


class Prober:
    """Tracks one probe of a container: when it is due and whether it currently holds.

    A readiness probe starts failing (not ready until it passes); a liveness probe starts
    passing (alive until it fails failureThreshold times in a row).
    """

    def __init__(self, probe: client.V1Probe | None, *, initially: bool) -> None:
        self.probe, self.initially = probe, initially
        self.ready, self.due, self.streak = probe is None or initially, 0.0, 0

    def started(self) -> None:
        """A new process started: back to the initial verdict, probed after the initial delay."""
        self.ready, self.streak = self.probe is None or self.initially, 0
        self.due = time.monotonic() + (self.probe.initial_delay_seconds or 0 if self.probe else 0)

    def check(self, container: client.V1Container, env: dict[str, str]) -> bool:
        """Probe if due; return True when the verdict changed."""
        if self.probe is None or time.monotonic() < self.due:
            return False
        self.due = time.monotonic() + (self.probe.period_seconds or 10)
        ok = passes(self.probe, container, env)
        # Consecutive results count towards successThreshold/failureThreshold, as in the kubelet.
        self.streak = max(self.streak, 0) + 1 if ok else min(self.streak, 0) - 1
        before = self.ready
        if ok and self.streak >= (self.probe.success_threshold or 1):
            self.ready = True
        elif not ok and -self.streak >= (self.probe.failure_threshold or 3):
            self.ready = False
        return self.ready != before
