"""`make up` / `make down`: a one-node Kubernetes in a network namespace, with infra/k8s applied.

`up` builds the images (images.sh), creates the namespace `kube-job` and its veth pair
(198.51.100.1 on the host, 198.51.100.2 the node), starts the control plane and the node in it,
makes the Secrets and the volumes that infra/k8s expects to exist, and applies every manifest
of infra/k8s unchanged. `down` stops it all and takes back what `up` changed.
"""

import argparse
import json
import os
import pathlib
import secrets
import subprocess
import sys

from localcluster.control_plane import HERE, REPO_ROOT, ControlPlane, default_state
from localcluster.netns import UP_NAME, UP_SUBNET, NodeNetwork
from localcluster.node import Node

USER = "kube-job"
# The claims infra/k8s's StatefulSets make for their pods (size, and the uid that writes there),
# each bound in advance to a directory in the state dir: there is no storage provisioner here.
CLAIMS = {"data-rabbitmq-0": ("2Gi", 999), "data-postgres-0": ("1Gi", 999)}
WORKLOADS = ["statefulset/rabbitmq", "statefulset/postgres", "deployment/producer", "deployment/scaler"]


def manifests() -> str:
    """Every document in infra/k8s, as it is."""
    return "\n---\n".join(p.read_text() for p in sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml")))


def build_images() -> None:
    subprocess.run([str(HERE / "images.sh"), "cluster"], check=True)


def generated(state: pathlib.Path, name: str) -> str:
    """A random secret (the RabbitMQ password, the upload token), kept in the state dir across `up`s."""
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text().strip()


def apply_secret(cp: ControlPlane, name: str, *, namespace: str = "default", **values: str) -> None:
    """Create or update a Secret; the values go through stdin, never on a command line."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
              "stringData": values}
    cp.kubectl("apply", "-f", "-", input=json.dumps(secret))


def claim_volumes(cp: ControlPlane, *, namespace: str = "default") -> None:
    """A hostPath PersistentVolume for each of CLAIMS in `namespace`, bound to it in advance."""
    for claim, (size, uid) in CLAIMS.items():
        path = cp.state / "volumes" / f"{namespace}-{claim}"
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, uid)  # a hostPath volume is not given the pod's fsGroup
        cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
                     "claimRef": {"namespace": namespace, "name": claim}}}))


def up(state: pathlib.Path) -> None:
    """Start what is not running yet and apply the manifests; print how to reach the app."""
    build_images()
    network = NodeNetwork(UP_NAME, UP_SUBNET)
    if not network.exists():
        network.create()
    cp = ControlPlane(state, network=network)
    cp.up()
    Node(cp).up()
    apply_secret(cp, "rabbitmq-credentials", username=USER, password=generated(cp.state, "rabbitmq-password"))
    apply_secret(cp, "postgres-credentials", username=USER, password=generated(cp.state, "postgres-password"))
    apply_secret(cp, "upload-token", token=generated(cp.state, "upload-token"))
    claim_volumes(cp)
    print(cp.kubectl("apply", "-f", "-", input=manifests()), end="")
    for workload in WORKLOADS:
        cp.kubectl("rollout", "status", workload, "--timeout=300s")
    # Not 8000 and 15672: the local producer and RabbitMQ (make demo, make rabbitmq) may hold them.
    print(f"\nexport KUBECONFIG={cp.kubeconfig}\n"
          "kubectl port-forward service/producer 18000:8000     # the upload API\n"
          "kubectl port-forward service/rabbitmq 15673:15672    # the management UI\n"
          "TOKEN=$(kubectl get secret upload-token -o jsonpath='{.data.token}' | base64 -d)")


def down(state: pathlib.Path) -> None:
    """Stop the node and the control plane, and delete the network namespace."""
    network = NodeNetwork(UP_NAME, UP_SUBNET)
    cp = ControlPlane(state, network=network)
    stopped = Node(cp).down() if cp.config_path.exists() else []
    stopped += cp.down()
    if network.delete():
        stopped.append(f"netns {UP_NAME}")
    print("stopped:", " ".join(stopped) or "nothing")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.stack")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state", type=pathlib.Path, default=default_state())
    args = parser.parse_args()
    try:
        (up if args.command == "up" else down)(args.state.resolve())
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{args.command} failed: {exc}")


if __name__ == "__main__":
    main()
