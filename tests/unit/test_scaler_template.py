"""The Job template: the packaged default is valid and restricted; bad ones are refused."""

import copy

import pytest
import yaml

from scaler import job_template
from scaler.job_template import TemplateError

DEFAULT = job_template.load()


def test_default_template_is_restricted_with_requests_and_limits():
    assert job_template.restricted_violations(DEFAULT) == []
    container = DEFAULT["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert DEFAULT["spec"]["ttlSecondsAfterFinished"] == 300
    assert DEFAULT["spec"]["backoffLimit"] == 3


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


def test_privileged_root_template_lists_its_violations():
    template = copy.deepcopy(DEFAULT)
    pod = template["spec"]["template"]["spec"]
    pod["securityContext"] = {"runAsUser": 0}
    pod["containers"][0]["securityContext"] = {"privileged": True}
    found = " ".join(job_template.restricted_violations(template))
    for problem in ("runAsNonRoot", "runAsUser", "seccompProfile", "privileged",
                    "allowPrivilegeEscalation", "ALL", "readOnlyRootFilesystem"):
        assert problem in found
