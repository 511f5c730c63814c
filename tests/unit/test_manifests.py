"""What the manifests ship is what the code and the local setup use."""

import re
from pathlib import Path

import yaml

from kubejob import message
from producer.settings import Settings as ProducerSettings
from scaler import job_template
from tests.helpers.worker import IN_HAND_BODIES, PREFETCHED_BODIES, RESIDENT_BYTES
from worker.settings import Settings as WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def manifest(name: str, kind: str, object_name: str) -> dict:
    docs = yaml.safe_load_all((ROOT / "infra" / "k8s" / name).read_text())
    return next(d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == object_name)


def test_the_shipped_rabbitmq_config_is_the_local_one() -> None:
    shipped = manifest("rabbitmq.yaml", "ConfigMap", "rabbitmq-config")["data"]["20-kube-job.conf"]
    assert shipped == (ROOT / "infra" / "rabbitmq" / "rabbitmq.conf").read_text()


def test_rabbitmq_blocks_publishers_well_below_its_pods_memory_limit() -> None:
    config = manifest("rabbitmq.yaml", "ConfigMap", "rabbitmq-config")["data"]["30-memory.conf"]
    threshold = re.search(r"^vm_memory_high_watermark\.absolute = (\d+)MiB$", config, re.MULTILINE)
    assert threshold, config
    pod = manifest("rabbitmq.yaml", "StatefulSet", "rabbitmq")["spec"]["template"]["spec"]
    limit = pod["containers"][0]["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    # Erlang's garbage collection can briefly double what a process holds: the alarm must leave room.
    assert int(threshold.group(1)) <= 0.6 * 1024 * int(limit.removesuffix("Gi"))


def test_the_deployed_producer_requires_an_upload_token_from_a_secret() -> None:
    container = manifest("producer.yaml", "Deployment", "producer")["spec"]["template"]["spec"]["containers"][0]
    token = next(e for e in container["env"] if e["name"] == "UPLOAD_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "upload-token"
    assert token["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert not token["valueFrom"]["secretKeyRef"].get("optional", False)  # off only by an explicit edit


def test_a_worker_holding_a_full_prefetch_of_the_largest_bodies_fits_its_jobs_memory_limit() -> None:
    config = {name.lower(): value for name, value in manifest("config.yaml", "ConfigMap", "kube-job-config")["data"]
              .items()}
    worker, producer = WorkerSettings(**config), ProducerSettings(**config)
    # What one row's body can be: no more than MAX_MESSAGE_BYTES, nor than a record of MAX_RECORD_BYTES makes.
    body = min(worker.max_message_bytes, message.largest_body(
        columns=producer.max_columns, name_chars=producer.max_record_bytes, value_chars=producer.max_record_bytes))
    held = RESIDENT_BYTES + body * (PREFETCHED_BODIES * worker.prefetch + IN_HAND_BODIES * worker.worker_concurrency
                                    + worker.batch_rows)
    container = yaml.safe_load(job_template.PACKAGED.read_text())["spec"]["template"]["spec"]["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    assert held <= int(limit.removesuffix("Mi")) * 1024**2, (held / 1024**2, limit)
