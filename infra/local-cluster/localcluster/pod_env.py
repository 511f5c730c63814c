"""Turn a pod's container spec into a local command line and environment.

Images are not pulled: each image name maps to a command run from the repo root
with the agent's own Python interpreter.

    worker:latest    ->  python -m worker
    producer:latest  ->  python -m producer
    scaler:latest    ->  python -m scaler

Only the last path segment of the image counts and a missing tag means
`latest`, so `registry.example/kube-job/worker` is `worker:latest`. A container
`command` replaces the mapped one (a leading `python`/`python3` becomes the
agent's interpreter) and `args` are appended, as in a real container runtime.
An image that is not mapped and has no `command` cannot start (ErrImageNeverPull).

RabbitMQ and PostgreSQL run beside the control plane, not as pods, so env values
that name the `rabbitmq` or `postgres` Service are pointed at 127.0.0.1: either
name as the host in `//rabbitmq:`, `@postgres:` or `//postgres/` forms (with or
without `.<namespace>.svc[.cluster.local]`), and `rabbitmq` also as a whole value
or in `rabbitmq:5672`. A bare `postgres` is left alone: it is as often a user or
database name as a host.
"""

import base64
import os
import re
import sys

from kubernetes import client

IMAGES = {
    "worker:latest": ["python", "-m", "worker"],
    "producer:latest": ["python", "-m", "producer"],
    "scaler:latest": ["python", "-m", "scaler"],
}
# A name followed by `:...@` is the user of a URL (postgresql://postgres:pw@db/x), not its host.
_IN_NAMESPACE = r"(?:\.[a-z0-9-]+(?:\.svc(?:\.cluster\.local)?)?)?(?=[:/]|$)(?![^/@]*@)"
LOCAL_HOST = re.compile(rf"(^|//|@)rabbitmq{_IN_NAMESPACE}|(//|@)postgres{_IN_NAMESPACE}")
# What a process needs from the host to start at all; everything else comes from the pod.
HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


class ImageNotMapped(Exception):
    """The container names an image that has no local command and gives none itself."""


def image_key(image: str) -> str:
    """Return `name:tag` for an image reference, dropping registry and path."""
    last = image.split("/")[-1].split("@")[0]
    return last if ":" in last else last + ":latest"


def command_for(container: client.V1Container) -> list[str]:
    """Return the argv that stands in for running `container`'s image."""
    argv = list(container.command or IMAGES.get(image_key(container.image)) or [])
    if not argv:
        raise ImageNotMapped(f"image {container.image!r} has no local command; known: {sorted(IMAGES)}")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable  # the agent's interpreter has the project's packages
    return argv + list(container.args or [])


def local_services(value: str) -> str:
    """Point a value that names the rabbitmq or postgres Service at the server on 127.0.0.1."""
    return LOCAL_HOST.sub(lambda m: (m.group(1) or m.group(2) or "") + "127.0.0.1", value)


def _expand(value: str, env: dict[str, str]) -> str:
    """Expand $(VAR) from variables defined earlier; $$(VAR) stays literal, as in Kubernetes."""
    return re.sub(r"\$(\$)?\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: f"$({m.group(2)})" if m.group(1) else env.get(m.group(2), m.group(0)), value)


class EnvResolver:
    """Reads the ConfigMaps and Secrets a pod refers to, once per pod start."""

    def __init__(self, api: client.CoreV1Api, pod: client.V1Pod) -> None:
        self.api, self.pod, self.ns = api, pod, pod.metadata.namespace

    def _configmap(self, name: str) -> dict[str, str]:
        return self.api.read_namespaced_config_map(name, self.ns).data or {}

    def _secret(self, name: str) -> dict[str, str]:
        data = self.api.read_namespaced_secret(name, self.ns).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _field(self, path: str) -> str:
        fields = {"metadata.name": self.pod.metadata.name, "metadata.namespace": self.ns,
                  "metadata.uid": self.pod.metadata.uid, "spec.nodeName": self.pod.spec.node_name,
                  "spec.serviceAccountName": self.pod.spec.service_account_name,
                  "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}
        if path not in fields:
            raise ValueError(f"fieldRef {path} is not supported by the node agent")
        return fields[path] or ""

    def _value_from(self, source: client.V1EnvVarSource) -> str | None:
        """Return the value an env `valueFrom` names, None for an optional missing key."""
        if source.field_ref:
            return self._field(source.field_ref.field_path)
        ref = source.config_map_key_ref or source.secret_key_ref
        if ref is None:
            raise ValueError("only configMapKeyRef, secretKeyRef and fieldRef are supported")
        data = self._configmap(ref.name) if source.config_map_key_ref else self._secret(ref.name)
        if ref.key not in data and not ref.optional:
            raise KeyError(f"key {ref.key!r} not in {ref.name!r}")
        return data.get(ref.key)

    def environment(self, container: client.V1Container) -> dict[str, str]:
        """Return the container's environment as its process should see it."""
        env: dict[str, str] = {}
        for source in container.env_from or []:
            ref = source.config_map_ref or source.secret_ref
            data = self._configmap(ref.name) if source.config_map_ref else self._secret(ref.name)
            env.update({(source.prefix or "") + k: v for k, v in data.items()})
        for var in container.env or []:
            value = _expand(var.value or "", env) if var.value_from is None else self._value_from(var.value_from)
            if value is not None:
                env[var.name] = value
        return {k: local_services(v) for k, v in env.items()}


def process_env(pod_env: dict[str, str], *, pod_name: str, kubeconfig: str | None) -> dict[str, str]:
    """Return the full environment for a container process: a few host basics plus the pod's."""
    env = {k: os.environ[k] for k in HOST_ENV if k in os.environ}
    # Output goes to a file that `kubectl logs -f` follows, so do not let Python hold it back.
    env.update({"HOSTNAME": pod_name, "PYTHONUNBUFFERED": "1"})
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    env.update(pod_env)
    return env
