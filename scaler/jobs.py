"""Counts and creates the worker Jobs through the Kubernetes API.

Errors: any `ApiException` or connection failure from the client library becomes a
`KubeError`, so the loop handles one type and never creates Jobs on a count it did not get.
"""

import json
import os
from typing import Any

import urllib3
from kubernetes import client, config

from scaler import job_template

# Every call this module makes to the API, as (apiGroup, resource, verb). The Role in
# infra/k8s/scaler.yaml grants exactly these (tests/unit/test_scaler_manifest.py checks it, and
# tests/integration/test_scaler_on_cluster.py that the apiserver allows nothing more).
PERMISSIONS = frozenset({("batch", "jobs", "list"), ("batch", "jobs", "create")})

# Conditions after which a Job's pods will not take more messages. FailureTarget and
# SuccessCriteriaMet are set (Kubernetes 1.31+) just before Failed and Complete.
_FINISHED = {"Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"}


class KubeError(Exception):
    """The Kubernetes API could not be reached or refused a request."""


def batch_api() -> client.BatchV1Api:
    """A batch/v1 client: from KUBECONFIG if set, else in-cluster inside a pod, else ~/.kube."""
    configuration = client.Configuration()
    # An explicit KUBECONFIG wins: the local node agent sets one for the scaler's pod.
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        # Passed in because the library reads KUBECONFIG only once, when first imported.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration,
            persist_config=False,
        )
    # The loop retries with backoff; urllib3's own retries would multiply the timeout.
    configuration.retries = 0
    return client.BatchV1Api(client.ApiClient(configuration))


class Jobs:
    """The worker Jobs of one namespace, found by their label."""

    def __init__(self, api: client.BatchV1Api, *, namespace: str, template: dict[str, Any],
                 timeout_s: float) -> None:
        self._api, self._namespace, self._template = api, namespace, template
        self._timeout_s = timeout_s

    def count_unfinished(self) -> int:
        """Jobs labelled app=worker-job that have not completed or failed, read live."""
        listed = self._call(
            "list jobs", self._api.list_namespaced_job, self._namespace,
            label_selector=job_template.LABEL_SELECTOR,
        )
        return sum(1 for job in listed.items if not is_finished(job))

    def create(self) -> str:
        """Create one Job from the template; return its generated name."""
        body = job_template.render(self._template, namespace=self._namespace)
        created = self._call("create job", self._api.create_namespaced_job, self._namespace, body)
        return created.metadata.name

    def _call(self, what: str, method, *args, **kwargs):
        try:
            # A (connect, read) pair: the client ignores a lone float (it checks for int), and
            # the setting is a float, so a silent apiserver would hold the loop forever.
            return method(*args, _request_timeout=(self._timeout_s, self._timeout_s), **kwargs)
        except client.ApiException as exc:
            raise KubeError(f"{what}: HTTP {exc.status} {_api_message(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError(f"{what}: API unreachable: {type(exc).__name__}: {exc}") from None


def is_finished(job: client.V1Job) -> bool:
    """Whether the Job will take no more messages: done, failed, or being deleted."""
    # A Job being deleted is finished for our purpose: its pods are going away.
    if job.metadata.deletion_timestamp is not None:
        return True
    conditions = (job.status and job.status.conditions) or []
    return any(c.type in _FINISHED and c.status == "True" for c in conditions)


def _api_message(exc: client.ApiException) -> str:
    # The Status body's message says what was wrong; the raw exception text adds headers.
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
