"""The one door to the Kubernetes API client: how it is configured, and how its errors become ours.

Errors: any `ApiException` or connection failure from the client library becomes a `KubeError`
(in `call`), so scaler.jobs, scaler.pods and scaler.events raise one type, and the loop handles
that one.
"""

import json
import os
from typing import Any

import urllib3
from kubernetes import client, config

from kubejob.errors import Temporary


class KubeError(Temporary):
    """The Kubernetes API could not be reached or refused a request; `status` is its HTTP status if it answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def api_client() -> client.ApiClient:
    """An API client: from KUBECONFIG if set, else in-cluster inside a pod, else ~/.kube."""
    configuration = client.Configuration()
    # An explicit KUBECONFIG wins, even inside a pod: it names the cluster to use on purpose.
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
    return client.ApiClient(configuration)


def call(what: str, method, *args, timeout_s: float, **kwargs):
    """`method` of a client API with the timeout applied; its failures raise KubeError saying `what` failed."""
    try:
        # A (connect, read) pair: the client ignores a lone float (it checks for int), and
        # the setting is a float, so a silent apiserver would hold the loop forever.
        return method(*args, _request_timeout=(timeout_s, timeout_s), **kwargs)
    except client.ApiException as exc:
        raise KubeError(f"{what}: HTTP {exc.status} {_api_message(exc)}", status=exc.status) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubeError(f"{what}: API unreachable: {type(exc).__name__}: {exc}") from exc


def list_items(what: str, method, *args, timeout_s: float, **kwargs) -> list[dict[str, Any]]:
    """The items of a list call, as the API's JSON; raises KubeError as `call` does.

    The client's model objects are skipped: each one builds a Configuration of its own, which
    resets the cache of every logger (kubernetes-client/python#1867): a cost paid for every Job
    and pod at every poll.
    """
    response = call(what, method, *args, timeout_s=timeout_s, _preload_content=False, **kwargs)
    try:
        return json.loads(response.data)["items"]
    finally:
        response.release_conn()


def _api_message(exc: client.ApiException) -> str:
    # The Status body's message says what was wrong; the raw exception text adds headers.
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
