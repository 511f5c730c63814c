"""infra/k8s/scaler.yaml: RBAC that grants what the code calls, the same template as the package, its wiring.

Whether its pod passes the restricted Pod Security Standard is asked of the real apiserver
(tests/integration/test_security.py).
"""

from pathlib import Path

import yaml

from scaler import job_template
from tests.helpers.kube import SCALER_PERMISSIONS

MANIFEST = Path(__file__).parents[2] / "infra" / "k8s" / "scaler.yaml"
DOCS = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_role_grants_exactly_what_the_scaler_calls_in_its_namespace():
    granted = {(group, resource, verb) for rule in DOCS["Role"]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == SCALER_PERMISSIONS
    assert "ClusterRole" not in DOCS and "ClusterRoleBinding" not in DOCS


def test_configmap_template_is_the_packaged_template_to_the_letter():
    assert DOCS["ConfigMap"]["data"]["job-template.yaml"] == job_template.PACKAGED.read_text()


def test_deployment_wires_settings_template_and_namespace():
    pod = DOCS["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["SCALER_JOB_TEMPLATE"]["configMapKeyRef"]["name"] == "scaler-job-template"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["RABBITMQ_PASSWORD"]["secretKeyRef"]["name"] == "rabbitmq-credentials"
    # DATABASE_URL (kube-job-config) names no account: libpq takes it from these, as the worker Jobs do.
    assert {env[name]["secretKeyRef"]["name"] for name in ("PGUSER", "PGPASSWORD")} == {"postgres-credentials"}
    assert container["envFrom"] == [{"configMapRef": {"name": "kube-job-config"}}]
    assert pod["serviceAccountName"] == "scaler"
    assert DOCS["Deployment"]["spec"]["replicas"] == 1
