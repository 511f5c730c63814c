"""The port each service serves its Prometheus metrics on, apart from anything else it serves."""

import logging
import socket

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
        _unavailable(port, exc)


def listening(port: int) -> socket.socket | None:
    """A socket listening on :`port` for a server of the process's own (the producer's uvicorn); None for 0.

    A port already taken is logged and gives None, as for `serve`.
    """
    if port == 0:
        return None
    try:
        return socket.create_server(("0.0.0.0", port))
    except OSError as exc:
        _unavailable(port, exc)
        return None


def _unavailable(port: int, exc: OSError) -> None:
    log.warning("metrics port unavailable, serving no metrics", extra={"port": port, "error": str(exc)})
