"""infra/k8s/scaler.yaml: least-privilege RBAC, the same template as the package, restricted pod."""

from pathlib import Path

import yaml

from scaler import job_template

MANIFEST = Path(__file__).parents[2] / "infra" / "k8s" / "scaler.yaml"
DOCS = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_role_grants_only_jobs_in_its_namespace():
    assert DOCS["Role"]["rules"] == [{
        "apiGroups": ["batch"], "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    }]
    assert "ClusterRole" not in DOCS


def test_configmap_template_is_the_packaged_template_to_the_letter():
    assert DOCS["ConfigMap"]["data"]["job-template.yaml"] == job_template.PACKAGED.read_text()


def test_deployment_wires_settings_template_and_namespace():
    pod = DOCS["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["SCALER_JOB_TEMPLATE"]["configMapKeyRef"]["name"] == "scaler-job-template"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["RABBITMQ_PASSWORD"]["secretKeyRef"]["name"] == "rabbitmq-credentials"
    assert container["envFrom"] == [{"configMapRef": {"name": "kube-job-config"}}]
    assert pod["serviceAccountName"] == "scaler"
    assert DOCS["Deployment"]["spec"]["replicas"] == 1


def test_scaler_pod_is_restricted_too():
    pod_template = {"spec": {"template": DOCS["Deployment"]["spec"]["template"]}}
    assert job_template.restricted_violations(pod_template) == []
