"""A TCP forwarder that tests put before a real service (AMQP, the apiserver) to cut the network."""

import contextlib
import socket
import threading
from urllib.parse import urlsplit

from tests.helpers import free_port


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to a real service (apiserver, AMQP) that can be cut and restored."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.port, self.mode = upstream_port, free_port(), "forward"
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.listen()

    def listen(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self, how: str) -> None:
        """"refuse": the port closes; "blackhole": connections are accepted and never answered;
        "freeze": every byte is dropped, on open connections too, and nobody is told.

        "refuse" and "blackhole" break the connections already open, as a restarted peer
        does; "freeze" leaves them open and silent, as a dead network does.
        """
        self.mode = how
        if how == "refuse":
            self._stop_listening()
        if how != "freeze":
            self._close_all()

    def restore(self) -> None:
        self.mode = "forward"
        self._close_all()  # the black-holed ones
        if self._listener.fileno() == -1:
            self.listen()

    def through(self, url: str) -> str:
        """`url` (e.g. a postgresql:// one) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def close(self) -> None:
        self._stop_listening()
        self._close_all()

    def _stop_listening(self) -> None:
        # close() alone leaves the port listening while accept() blocks in another thread;
        # shutdown() wakes it, so the port truly refuses.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            self._sockets.append(conn)
            if self.mode in ("forward", "freeze"):
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                self._sockets.append(upstream)
                for src, dst in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.mode != "freeze":
                    dst.sendall(data)
        except OSError:
            pass
        _shut(src)
        _shut(dst)

    def _close_all(self) -> None:
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
