"""The port the worker and the scaler serve Prometheus metrics on; the producer serves them on its API's."""

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve(port: int) -> None:
    """Serve the process's metrics at :`port`/metrics on a thread of its own; 0 serves nothing.

    A port already taken is logged and the service runs on without metrics: in a cluster each
    pod has its own ports, but processes sharing one host (`make up`) can collide.
    """
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("metrics port unavailable, serving no metrics", extra={"port": port, "error": str(exc)})
