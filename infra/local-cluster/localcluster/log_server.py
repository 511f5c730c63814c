"""The kubelet's HTTPS /containerLogs endpoint, so `kubectl logs [-f]` works through the apiserver."""

import http.server
import logging
import pathlib
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)
# (namespace, pod, container) -> (log directory, still running?) or None when unknown
Lookup = Callable[[str, str, str], tuple[pathlib.Path, Callable[[], bool]] | None]


def _current_log(directory: pathlib.Path, previous: bool) -> pathlib.Path | None:
    """Return the newest run's log file, or the one before it for `previous`."""
    runs = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
    want = 2 if previous else 1
    return runs[-want] if len(runs) >= want else None


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=."""

    lookup: Lookup

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        found = self.lookup(*parts[1:]) if len(parts) == 4 and parts[0] == "containerLogs" else None
        path = found and _current_log(found[0], query.get("previous") == "true")
        if not path:
            self.send_error(404, f"no logs for {url.path}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()  # no length: HTTP/1.0 ends the body when the connection closes
        with open(path, "rb") as f:
            self._send_tail(f, query.get("tailLines"))
            if query.get("follow") == "true":
                self._follow(f, found[1])

    def _send_tail(self, f, tail_lines: str | None) -> None:
        """Send the whole file so far, or only its last `tail_lines` lines."""
        if tail_lines is None:
            self.wfile.write(f.read())
        elif int(tail_lines) > 0:
            self.wfile.writelines(deque(f.read().splitlines(keepends=True), maxlen=int(tail_lines)))
        else:
            f.seek(0, 2)
        self.wfile.flush()

    def _follow(self, f, running: Callable[[], bool]) -> None:
        """Stream what the container writes until it stops or the client goes away."""
        while True:
            alive = running()  # read before the file, so the last lines are not lost
            chunk = f.read()
            if chunk:
                self.wfile.write(chunk)
                self.wfile.flush()
            elif not alive:
                return
            else:
                time.sleep(0.2)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("log server: " + fmt, *args)


def serve(*, lookup: Lookup, cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path) -> int:
    """Serve container logs on a free port of 127.0.0.1 in a daemon thread; return the port."""
    handler = type("BoundHandler", (Handler,), {"lookup": staticmethod(lookup)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    # Only the apiserver, with its kubelet client cert from our CA, may read logs.
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="log-server", daemon=True).start()
    return server.server_address[1]
