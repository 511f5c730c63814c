"""What the manifests ship is what the code and the local setup use."""

import re
from pathlib import Path

import yaml
from kubernetes.utils.quantity import parse_quantity

from kubejob import message
from kubejob.message import dead_letter_queue, declarations, limit_queue
from producer.settings import Settings as ProducerSettings
from scaler import job_template
from tests.helpers.broker import SHIPPED_DEFINITIONS, dead_letter_policy
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


def test_the_producers_upload_spool_fits_its_volume_when_every_upload_is_as_large_as_allowed() -> None:
    shipped = manifest("config.yaml", "ConfigMap", "kube-job-config")["data"]
    pod = manifest("producer.yaml", "Deployment", "producer")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    settings = shipped | {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # Starlette spools each upload's file to the temporary directory, /tmp unless TMPDIR says otherwise.
    spool = settings.get("TMPDIR", "/tmp")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == spool)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    worst = int(settings["MAX_UPLOAD_BYTES"]) * int(settings["MAX_CONCURRENT_UPLOADS"])
    # Past its sizeLimit the kubelet evicts the pod, and every upload in it fails.
    assert worst <= parse_quantity(volume["emptyDir"]["sizeLimit"]), (worst, volume)


def test_the_shipped_rabbitmq_definitions_are_the_local_ones() -> None:
    shipped = manifest("rabbitmq.yaml", "ConfigMap", "rabbitmq-definitions")["data"]["kube-job.json"]
    assert shipped == SHIPPED_DEFINITIONS.read_text()


def test_the_dead_letter_queues_keep_a_row_as_long_as_the_ledger_keeps_its_upload() -> None:
    shipped = manifest("config.yaml", "ConfigMap", "kube-job-config")["data"]
    policy = dead_letter_policy()
    day_ms = 24 * 3600 * 1000
    assert policy["definition"]["message-ttl"] == float(shipped["LEDGER_RETENTION_DAYS"]) * day_ms
    retention = ProducerSettings.model_fields["ledger_retention_days"].default
    assert policy["definition"]["message-ttl"] == retention * day_ms
    assert policy["vhost"] == shipped["RABBITMQ_VHOST"] and policy["apply-to"] == "queues"
    queue = shipped["QUEUE_NAME"]
    bounded = [dead_letter_queue(queue), limit_queue(queue)]
    assert [name for name, _ in declarations(queue) if re.search(policy["pattern"], name)] == bounded
    # A limit in a queue's own arguments would win over the policy's when lower, and could never change.
    limits = {"x-message-ttl", "x-max-length", "x-max-length-bytes", "x-overflow"}
    assert not any(limits & arguments.keys() for name, arguments in declarations(queue) if name in bounded)


def test_the_dead_letter_queues_fill_at_most_half_of_rabbitmq_s_volume() -> None:
    claim = manifest("rabbitmq.yaml", "StatefulSet", "rabbitmq")["spec"]["volumeClaimTemplates"][0]
    volume = parse_quantity(claim["spec"]["resources"]["requests"]["storage"])
    definition = dead_letter_policy()["definition"]
    # Two queues, each dropping its oldest rows past the bound; the rest of the volume is for `<queue>`.
    assert definition["overflow"] == "drop-head"
    assert 2 * definition["max-length-bytes"] <= volume / 2


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
