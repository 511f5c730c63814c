"""RabbitMQ PerfTest, the broker's own benchmark tool: the yardstick the services are measured against.

PerfTest (com.rabbitmq:perf-test) is fetched once with Maven into ~/.cache/kube-job/perftest and
run on the services' broker, on a queue declared as the services declare an upload's (a quorum queue
with its dead-letter queues; PerfTest only uses it, `--predeclared`), with persistent messages as large
as ours. `python -m bench.perftest` fetches it; the benchmarks call the measurements.
"""

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench import support

VERSION = "2.22.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kube-job" / "perftest" / VERSION
TIMEOUT_S = 300
_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kube-job</groupId><artifactId>perftest-fetch</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>com.rabbitmq</groupId><artifactId>perf-test</artifactId><version>{VERSION}</version></dependency>
  </dependencies>
</project>
"""
# PerfTest's closing lines: with -C every message is confirmed before it stops, with -D every one received.
_SENT = re.compile(r"sending rate avg: ([\d.]+) msg/s")
_RECEIVED = re.compile(r"receiving rate avg: ([\d.]+) msg/s")


class PerfTestError(RuntimeError):
    """PerfTest could not be fetched, or did not run to its end."""


def fetch() -> Path:
    """The folder of PerfTest's jars and their dependencies, fetched with Maven the first time."""
    lib = CACHE / "lib"
    if (lib / f"perf-test-{VERSION}.jar").exists():
        return lib
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise PerfTestError(f"PerfTest needs {tool!r} on PATH: `make perftest` installs Debian's maven and Java")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        (Path(tmp) / "pom.xml").write_text(_POM)
        done = subprocess.run(["mvn", "-B", "-q", "-f", f"{tmp}/pom.xml", "dependency:copy-dependencies",
                               f"-DoutputDirectory={tmp}/lib"], capture_output=True, text=True)
        if done.returncode != 0:
            raise PerfTestError(
                f"Maven could not fetch com.rabbitmq:perf-test:{VERSION} (exit {done.returncode}): it needs Maven "
                "Central, or a mirror of it in ~/.m2/settings.xml; check the network or proxy (mvn -B "
                f"dependency:get -Dartifact=com.rabbitmq:perf-test:{VERSION} shows why), or copy the jars of "
                f"perf-test and its dependencies into {lib}.\n{(done.stdout + done.stderr)[-2000:]}")
        os.replace(f"{tmp}/lib", lib)  # whole or not at all: a half fetch never looks like a cached one
    return lib


def message_size() -> int:
    """Bytes of one of our messages, body and properties: what PerfTest sends as a body of that size."""
    messages = support.encoded_messages(support.sample_csv(10_000), upload_id=uuid.uuid4().hex)
    return round(statistics.mean(len(body) + len(b"".join(props.encode())) for body, props in messages))


def _run(*args: str) -> str:
    lib = fetch()
    uri = f"amqp://{support.broker.user}:{support.broker.password}@{support.broker.host}:{support.broker.port}"
    command = ["java", "-cp", f"{lib}/*", "com.rabbitmq.perf.PerfTest", "--uri", uri, "--predeclared",
               "--flag", "persistent", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # Not chained: TimeoutExpired's text is the command, whose --uri holds the broker's password.
        raise PerfTestError(f"PerfTest did not finish in {TIMEOUT_S} s: {' '.join(args)}") from None
    if done.returncode != 0:
        raise PerfTestError(f"PerfTest exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def _rate(pattern: re.Pattern[str], output: str) -> float:
    found = pattern.search(output)
    if found is None:
        raise PerfTestError(f"no {pattern.pattern!r} in PerfTest's output: {output[-2000:]}")
    return float(found.group(1))


def _publish(queue: str, count: int, size: int, window: int) -> float:
    return _rate(_SENT, _run("--queue", queue, "--producers", "1", "--consumers", "0", "--size", str(size),
                             "--confirm", str(window), "--pmessages", str(count)))


@contextlib.contextmanager
def _upload_queue() -> Iterator[str]:
    """A queue declared as an upload's is (kubejob.message), with the queues around it; deleted after."""
    base = f"bench-perftest-{uuid.uuid4().hex[:8]}"
    with support.broker.connection() as conn:
        queue = support.broker.declare_upload(conn.channel(), base, uuid.uuid4().hex)
    try:
        yield queue
    finally:
        with support.broker.connection() as conn:
            conn.channel().queue_delete(queue)
        support.broker.delete_queue(base)


def publish_confirms(count: int, *, size: int, window: int) -> float:
    """Messages per second one PerfTest producer publishes, each confirmed, `window` in flight."""
    with _upload_queue() as queue:
        return _publish(queue, count, size, window)


def consume_multi_ack(count: int, *, size: int, prefetch: int = 100, ack_every: int = 100) -> float:
    """Messages per second one PerfTest consumer takes off a queue of `count`, acking `ack_every` at once."""
    with _upload_queue() as queue:
        _publish(queue, count, size, window=20_000)
        return _rate(_RECEIVED, _run("--queue", queue, "--producers", "0", "--consumers", "1",
                                     "--qos", str(prefetch), "--multi-ack-every", str(ack_every),
                                     "--cmessages", str(count)))


if __name__ == "__main__":
    try:
        print(f"PerfTest {VERSION} in {fetch()}")
    except PerfTestError as exc:
        sys.exit(f"perftest: {exc}")
