"""`make up` / `make down`: RabbitMQ, PostgreSQL, the control plane, the node agent and kube-job's manifests.

RabbitMQ runs beside the control plane, not as a pod: one that already answers on
5672/15672 is reused, otherwise scripts/rabbitmq.sh starts one (as `make rabbitmq`
does). PostgreSQL too: scripts/postgres.sh (`make postgres`) reuses or starts the
machine's own, and the pods log in as a role of their own that acts as kubejob, so
they share the database with everything run on the host. The Services and the
ConfigMap are applied; the two StatefulSets are not. What `up` started is recorded
in the state dir, and `down` stops exactly that.
"""

import argparse
import base64
import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from localcluster import processes
from localcluster.agent import AGENT, start_agent, stop_agent, wait_node
from localcluster.control_plane import REPO_ROOT, ControlPlane, default_state

USER = "kube-job"
ADMIN = (os.environ.get("RABBITMQ_ADMIN_USER", "guest"), os.environ.get("RABBITMQ_ADMIN_PASSWORD", "guest"))
PRODUCER = "http://localhost:8000"
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "postgres.sh"
OUTSIDE = ("rabbitmq", "postgres")  # the StatefulSets whose servers run beside the cluster


def answers(port: int) -> bool:
    """True when something accepts TCP connections on localhost:`port`."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_rabbitmq() -> bool:
    """Make sure RabbitMQ answers, the way `make rabbitmq` does; True if it was not running before."""
    running = answers(5672) and answers(15672)
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "rabbitmq.sh")], check=True)
    return not running


def stop_rabbitmq() -> None:
    """Stop the RabbitMQ that `up` started."""
    subprocess.run(["rabbitmqctl", "stop"], check=False, stdout=subprocess.DEVNULL)


def start_postgres(port: int = 5432) -> bool:
    """Make sure scripts/postgres.sh's PostgreSQL answers; True if it had to start it."""
    was_running = answers(port)
    subprocess.run(["bash", str(POSTGRES_SCRIPT)], check=True)
    return not was_running


def stop_postgres() -> None:
    """Stop the PostgreSQL that `up` started."""
    subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop"], check=False)


def ensure_postgres_role(password: str) -> None:
    """Create or update the pods' role: it logs in with `password` and acts as kubejob.

    Acting as kubejob (the role scripts/postgres.sh makes) gives the pods its rights on the
    kubejob database and makes kubejob the owner of whatever they create, so the host's
    services, which log in as kubejob, can use it too. Over the unix socket as the postgres
    OS user, as scripts/postgres.sh does; the SQL goes through stdin, never a command line.
    """
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else ["sudo", "-u", "postgres"]
    literal = "'" + password.replace("'", "''") + "'"
    sql = ("SET client_min_messages = warning;\n"  # not "already a member" on every `up`
           f"SELECT 'CREATE ROLE \"{USER}\"' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') \\gexec\n"
           f'ALTER ROLE "{USER}" LOGIN PASSWORD {literal};\n'
           f'GRANT kubejob TO "{USER}";\n'
           f"ALTER ROLE \"{USER}\" SET role = 'kubejob';\n")
    psql = subprocess.run([*as_postgres, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=sql, text=True,
                          check=False, stdout=subprocess.DEVNULL)
    if psql.returncode:
        sys.exit(f"could not create the PostgreSQL role {USER} as the postgres OS user (see above)")


def management(method: str, path: str, body: dict | None = None, *, http_port: int = 15672) -> None:
    """Call the management API as the admin account."""
    request = urllib.request.Request(f"http://localhost:{http_port}/api/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json", "authorization": "Basic "
                                              + base64.b64encode(":".join(ADMIN).encode()).decode()})
    urllib.request.urlopen(request, timeout=10).close()


def ensure_user(password: str, *, http_port: int = 15672) -> None:
    """Create or update the kube-job account with full rights on vhost `/`.

    The management API rather than rabbitmqctl: it also reaches a reused broker that
    runs as another OS user, whose Erlang cookie rabbitmqctl could not read.
    """
    management("PUT", f"users/{USER}", {"password": password, "tags": "administrator"}, http_port=http_port)
    management("PUT", f"permissions/%2F/{USER}", {"configure": ".*", "write": ".*", "read": ".*"},
               http_port=http_port)


def manifests() -> str:
    """Every document in infra/k8s except the RabbitMQ and PostgreSQL workloads, which run outside the cluster."""
    docs = []
    for path in sorted((REPO_ROOT / "infra" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text())
                 if d and not (d["kind"] in ("StatefulSet", "Deployment") and d["metadata"]["name"] in OUTSIDE)]
    return yaml.safe_dump_all(docs)


def kubectl(cp: ControlPlane, *args: str, input: str | None = None) -> str:
    kubectl_bin = pathlib.Path(cp.config["bin_dir"]) / "kubectl"
    return subprocess.run([str(kubectl_bin), "--kubeconfig", str(cp.kubeconfig), *args], input=input,
                          check=True, capture_output=True, text=True).stdout


def generated(state: pathlib.Path, name: str) -> str:
    """A random secret (the RabbitMQ and PostgreSQL passwords, the upload token), kept in the state dir across `up`s."""
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text().strip()


def apply_secret(cp: ControlPlane, name: str, **values: str) -> None:
    """Create or update a Secret; the values go through stdin, never on a command line."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}
    kubectl(cp, "apply", "-f", "-", input=json.dumps(secret))


def wait_producer(timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(PRODUCER + "/healthz", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    sys.exit(f"producer did not answer on {PRODUCER}/healthz in {timeout}s; try kubectl logs deployment/producer")


def up(state: pathlib.Path) -> None:
    """Start what is not running yet and apply the manifests; print where things are."""
    record_path = state / "stack.json"
    record = {"rabbitmq_started": False, "postgres_started": False}
    record.update(json.loads(record_path.read_text()) if record_path.exists() else {})
    state.mkdir(parents=True, exist_ok=True)
    if answers(8000) and not processes.running(AGENT, state=state):
        sys.exit("something already listens on localhost:8000, where the producer pod must listen")
    record["rabbitmq_started"] = start_rabbitmq() or record["rabbitmq_started"]
    record_path.write_text(json.dumps(record))
    record["postgres_started"] = start_postgres() or record["postgres_started"]
    record_path.write_text(json.dumps(record))
    cp = ControlPlane(state)
    cp.up()
    start_agent(cp)
    wait_node(cp)
    secret = generated(state, "rabbitmq-password")
    ensure_user(secret)
    apply_secret(cp, "rabbitmq-credentials", username=USER, password=secret)
    postgres_secret = generated(state, "postgres-password")
    ensure_postgres_role(postgres_secret)
    apply_secret(cp, "postgres-credentials", username=USER, password=postgres_secret)
    apply_secret(cp, "upload-token", token=generated(state, "upload-token"))
    # An `up` that changed a Deployment must not report the pods it is replacing as ready.
    for deployment in ("producer", "scaler"):
        kubectl(cp, "rollout", "status", f"deployment/{deployment}", "--timeout=120s")
    wait_producer()


def down(state: pathlib.Path) -> None:
    """Stop the node agent (and so every pod), the control plane, and a RabbitMQ or PostgreSQL we started."""
    cp = ControlPlane(state)
    stopped = stop_agent(cp) + cp.down()
    record_path = state / "stack.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("rabbitmq_started"):
        stop_rabbitmq()
        stopped.append("rabbitmq")
    if record.get("postgres_started"):
        stop_postgres()
        stopped.append("postgres")
    record_path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.stack")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state", type=pathlib.Path, default=default_state())
    args = parser.parse_args()
    (up if args.command == "up" else down)(args.state.resolve())


if __name__ == "__main__":
    main()
