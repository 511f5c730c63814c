"""`python -m scaler`: validate the configuration, then poll until SIGTERM."""

import logging
import signal
import socket
import sys
import threading

from kubernetes import client
from kubernetes.config import ConfigException

from kubejob import logs, metrics
from kubejob.settings import load_or_exit
from scaler.backlog import Backlog
from scaler.events import Recorder, scaler_reference
from scaler.jobs import Jobs
from scaler.kube import api_client
from scaler.loop import Limits, Scaler
from scaler.pods import WorkerPods
from scaler.queue_depth import ManagementClient
from scaler.queue_live import LiveQueues
from scaler.settings import Settings
from scaler.uploads import OpenUploads

log = logging.getLogger("scaler")


def main() -> None:
    """Run the scaler; exit non-zero only for configuration that can never work."""
    settings = load_or_exit(Settings, "scaler")
    logs.configure(settings.log_level, secrets=settings.secrets())
    template = settings.job_template()
    try:
        api = api_client()
    except ConfigException as exc:
        sys.exit(f"scaler: no Kubernetes configuration (in-cluster or KUBECONFIG): {exc}")
    metrics.serve(settings.scaler_metrics_port)
    queue = _backlog(settings)
    jobs = Jobs(client.BatchV1Api(api), namespace=settings.pod_namespace, template=template,
                timeout_s=settings.scaler_http_timeout_seconds)
    pods = WorkerPods(client.CoreV1Api(api), namespace=settings.pod_namespace,
                      timeout_s=settings.scaler_http_timeout_seconds)
    events = _recorder(client.EventsV1Api(api), settings)
    log.info("scaler started", extra=_public(settings))
    try:
        Scaler(queue=queue, jobs=jobs, pods=pods, limits=_limits(settings), events=events).run(
            _stop_on_signals(), poll_s=settings.scaler_poll_seconds,
            max_backoff_s=settings.scaler_max_backoff_seconds,
        )
    finally:
        queue.close()
        events.close(settings.scaler_http_timeout_seconds)
    log.info("scaler stopped")


def _recorder(api: client.EventsV1Api, settings: Settings) -> Recorder:
    scaler = scaler_reference(namespace=settings.pod_namespace, pod_name=settings.pod_name,
                              pod_uid=settings.pod_uid)
    return Recorder(api, namespace=settings.pod_namespace, instance=settings.pod_name or socket.gethostname(),
                    scaler=scaler, timeout_s=settings.scaler_http_timeout_seconds)


def _backlog(settings: Settings) -> Backlog:
    management = ManagementClient(
        base_url=settings.rabbitmq_management_url, user=settings.rabbitmq_user,
        password=settings.rabbitmq_password.get_secret_value(), vhost=settings.rabbitmq_vhost,
        timeout_s=settings.scaler_http_timeout_seconds,
    )
    parameters = settings.connection_parameters(
        # stack_timeout bounds the whole AMQP handshake (pika's default is 15 s): a broker that
        # accepts the connection and says nothing must cost no more than any other timeout.
        connection_attempts=1, socket_timeout=settings.scaler_http_timeout_seconds,
        stack_timeout=settings.scaler_http_timeout_seconds,
        blocked_connection_timeout=settings.scaler_http_timeout_seconds,
    )
    live = LiveQueues(parameters=parameters, timeout_s=settings.scaler_http_timeout_seconds)
    uploads = OpenUploads(settings.database_url.get_secret_value(), queue=settings.queue_name,
                          timeout_s=settings.database_timeout_seconds)
    return Backlog(queue=settings.queue_name, uploads=uploads, live=live, management=management)


def _limits(settings: Settings) -> Limits:
    return Limits(
        threshold=settings.scaler_threshold, messages_per_job=settings.scaler_messages_per_job,
        max_jobs=settings.scaler_max_jobs,
        small_backlog_wait_s=settings.scaler_small_backlog_wait_seconds,
        stuck_s=settings.scaler_stuck_seconds, job_backoff_s=settings.scaler_job_backoff_seconds,
        job_backoff_max_s=settings.scaler_job_backoff_max_seconds,
    )


def _public(settings: Settings) -> dict[str, object]:
    # The template is long and the password secret: everything else helps a reader of the logs.
    hidden = {"rabbitmq_password", "database_url", "scaler_job_template"}
    return {k: v for k, v in settings.model_dump().items() if k not in hidden}


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


if __name__ == "__main__":
    main()
