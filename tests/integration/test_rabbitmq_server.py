"""The RabbitMQ 4.0 containers that test sessions start (tests.helpers.rabbitmq_server).

A session that is killed never stops its container; the next one removes it, and leaves alone
the containers of a session that still runs.
"""

import os
import subprocess
import uuid

from tests.helpers.rabbitmq_server import IMAGES_SH, OWNER_LABEL, remove_orphans


def _run(image: str, owner: int) -> str:
    name = f"kube-job-test-orphan-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "--detach", "--rm", "--name", name, "--label", f"{OWNER_LABEL}={owner}",
                    "--entrypoint", "sleep", image, "600"], check=True, capture_output=True, timeout=60)
    return name


def _running() -> set[str]:
    listed = subprocess.run(["docker", "ps", "--format", "{{.Names}}"], check=True, capture_output=True, text=True)
    return set(listed.stdout.split())


def test_a_killed_sessions_container_is_removed_and_a_live_ones_kept() -> None:
    image = subprocess.run(["bash", str(IMAGES_SH), "rabbitmq"], check=True, capture_output=True, text=True,
                           timeout=1800).stdout.strip()
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process
    orphan, ours = _run(image, gone.pid), _run(image, os.getpid())
    try:
        assert orphan in remove_orphans()
        assert orphan not in _running() and ours in _running()
    finally:
        subprocess.run(["docker", "rm", "--force", orphan, ours], capture_output=True, timeout=60)
