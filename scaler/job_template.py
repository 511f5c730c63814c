"""The Job manifest the scaler creates: loaded from YAML, checked at start, rendered per Job."""

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from kubejob.errors import Permanent

PACKAGED = Path(__file__).with_name("job-template.yaml")
LABEL_KEY, LABEL_VALUE = "app", "worker-job"
LABEL_SELECTOR = f"{LABEL_KEY}={LABEL_VALUE}"
DEFAULT_GENERATE_NAME = "worker-job-"
# On each Job: which template made it, so a stuck Job of an older template is known as such.
HASH_ANNOTATION = "kube-job.io/template-hash"


class TemplateError(Permanent, ValueError):
    """The Job template cannot be used to create Jobs."""


def load(text: str = "") -> dict[str, Any]:
    """Parse and validate a Job template; empty text means the packaged one."""
    source = text if text.strip() else PACKAGED.read_text()
    try:
        manifest = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise TemplateError(f"not valid YAML: {exc}") from exc
    problems = list(_problems(manifest))
    if problems:
        raise TemplateError("; ".join(problems))
    return manifest


def render(template: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    """One Job body from the template, with the label the scaler counts by forced on."""
    job = copy.deepcopy(template)
    meta = _own_mapping(job, "metadata")
    meta["namespace"] = namespace
    meta["generateName"] = meta.get("generateName") or DEFAULT_GENERATE_NAME
    # Forced, not defaulted: a Job without the label would be invisible to the count and
    # the scaler would keep creating more of them.
    _own_mapping(meta, "labels")[LABEL_KEY] = LABEL_VALUE
    _own_mapping(meta, "annotations")[HASH_ANNOTATION] = template_hash(template)
    pod_meta = _own_mapping(job["spec"]["template"], "metadata")
    _own_mapping(pod_meta, "labels")[LABEL_KEY] = LABEL_VALUE
    return job


def template_hash(template: dict[str, Any]) -> str:
    """A short digest of the template: equal for the same template, whatever its YAML layout."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def _problems(manifest: Any):
    if not isinstance(manifest, dict):
        yield "must be a YAML mapping holding one Job"
        return
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        yield "must be apiVersion: batch/v1, kind: Job"
    if "name" in _mapping(manifest, "metadata"):
        yield "metadata.name is not allowed, every Job needs its own: use metadata.generateName"
    spec = _mapping(manifest, "spec")
    for key in ("ttlSecondsAfterFinished", "backoffLimit"):
        if not _whole(spec.get(key)):
            yield f"spec.{key} must be a whole number >= 0"
    pod = _mapping(_mapping(spec, "template"), "spec")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        yield "spec.template.spec.restartPolicy must be Never or OnFailure"
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        yield "spec.template.spec.containers must list at least one container"
        return
    for index, container in enumerate(containers):
        yield from _container_problems(index, container)


def _container_problems(index: int, container: Any):
    where = f"spec.template.spec.containers[{index}]"
    if not isinstance(container, dict) or not container.get("name") or not container.get("image"):
        yield f"{where} needs a name and an image"
        return
    resources = _mapping(container, "resources")
    for kind in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(_mapping(resources, kind))
        if missing:
            yield f"{where}.resources.{kind} must set {' and '.join(sorted(missing))}"


def _own_mapping(parent: dict[str, Any], key: str) -> dict[str, Any]:
    # YAML `labels:` with nothing under it loads as None, not as an empty mapping.
    if not isinstance(parent.get(key), dict):
        parent[key] = {}
    return parent[key]


def _mapping(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
