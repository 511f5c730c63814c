"""The Job template: the packaged default is valid; bad ones are refused.

Whether its pod passes the restricted Pod Security Standard is asked of the real apiserver
(tests/integration/test_security.py).
"""

import copy

import pytest
import yaml

from scaler import job_template
from scaler.job_template import TemplateError

DEFAULT = job_template.load()


def test_default_jobs_are_removed_once_finished():
    # The scaler may not delete Jobs (scaler.jobs.PERMISSIONS): without a TTL they would pile up.
    assert DEFAULT["spec"]["ttlSecondsAfterFinished"] > 0


def test_default_template_reads_the_shared_config_and_secret():
    container = DEFAULT["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "kube-job-config"}}]
    secret_keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
        if e["valueFrom"]["secretKeyRef"]["name"] == "rabbitmq-credentials"
    }
    assert secret_keys == {"RABBITMQ_USER": "username", "RABBITMQ_PASSWORD": "password"}


def test_render_forces_the_label_and_namespace_without_touching_the_template():
    template = copy.deepcopy(DEFAULT)
    template["metadata"]["labels"] = {"app": "something-else", "team": "data"}
    del template["spec"]["template"]["metadata"]
    job = job_template.render(template, namespace="batch")
    assert job["metadata"]["labels"] == {"app": "worker-job", "team": "data"}
    assert job["spec"]["template"]["metadata"]["labels"] == {"app": "worker-job"}
    assert job["metadata"]["namespace"] == "batch"
    assert template["metadata"]["labels"]["app"] == "something-else"


def test_render_fills_empty_metadata_written_as_bare_keys():
    text = job_template.PACKAGED.read_text()
    text = text.replace("metadata:\n  generateName: worker-job-\n  labels:\n    app: worker-job\n",
                        "metadata:\n  labels:\n")
    assert "generateName:" not in text
    job = job_template.render(job_template.load(text), namespace="default")
    assert job["metadata"]["generateName"] == "worker-job-"
    assert job["metadata"]["labels"] == {"app": "worker-job"}


def _without(path: str) -> str:
    template = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = template
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    del node[last]
    return yaml.safe_dump(template)


@pytest.mark.parametrize(
    "path",
    [
        "spec.ttlSecondsAfterFinished",
        "spec.backoffLimit",
        "spec.template.spec.restartPolicy",
        "spec.template.spec.containers.0.image",
        "spec.template.spec.containers.0.resources.limits",
        "spec.template.spec.containers.0.resources.requests.memory",
    ],
)
def test_template_missing_a_required_field_is_refused(path):
    with pytest.raises(TemplateError, match=path.split(".")[-1]):
        job_template.load(_without(path))


def test_fixed_name_is_refused_because_jobs_would_collide():
    template = copy.deepcopy(DEFAULT)
    template["metadata"]["name"] = "worker"
    with pytest.raises(TemplateError, match="generateName"):
        job_template.load(yaml.safe_dump(template))
