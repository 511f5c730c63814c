"""Reads a queue's counts from the RabbitMQ management HTTP API.

Errors: every failure to get a trustworthy reading is a `QueueReadError` (401, 5xx,
timeout, unreachable, malformed answer). Its subclass `StatsNotReady` is a healthy 200
that lacks the counts, as for a queue declared less than a statistics interval ago.
A 404 from RabbitMQ means the queue is not declared yet, which is a real reading: depth 0.
"""

from urllib.parse import quote

import httpx

from scaler.queue_counts import EMPTY, QueueCounts, QueueReadError, StatsNotReady

_COUNTS = ("messages", "messages_ready", "messages_unacknowledged", "consumers")


class ManagementClient:
    """A client of the management API for one queue; reuses its connection between polls."""

    def __init__(self, *, base_url: str, user: str, password: str, vhost: str, queue: str,
                 timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        self._path = f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        self._user = user
        self._timeout_s = timeout_s
        # `transport` lets a test answer 500 or time out without a server (httpx.MockTransport).
        self._http = httpx.Client(base_url=base_url, auth=(user, password), timeout=timeout_s,
                                  transport=transport)

    def read(self) -> QueueCounts:
        """The queue's counts now (as fresh as the broker's statistics interval)."""
        try:
            response = self._http.get(self._path)
        except httpx.TimeoutException as exc:
            raise QueueReadError(f"management API timed out after {self._timeout_s}s") from exc
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise QueueReadError(f"management API unreachable: {reason}") from exc
        return self._counts(response)

    def close(self) -> None:
        """Release the connection."""
        self._http.close()

    def _counts(self, response: httpx.Response) -> QueueCounts:
        status = response.status_code
        if status == 401:
            raise QueueReadError(
                f"management API rejected user {self._user!r} (HTTP 401)", status=status
            )
        if status == 404 and _rabbitmq_not_found(response):
            return EMPTY
        if status != 200:
            raise QueueReadError(f"management API answered HTTP {status}", status=status)
        return _parse(response)


def _rabbitmq_not_found(response: httpx.Response) -> bool:
    # Only RabbitMQ's own "no such queue" means depth 0; a 404 from a proxy or a wrong
    # base URL must not turn into a silent, permanent zero.
    try:
        return response.json().get("error") == "Object Not Found"
    except (ValueError, AttributeError):
        return False


def _parse(response: httpx.Response) -> QueueCounts:
    try:
        body = response.json()
    except ValueError as exc:
        raise QueueReadError("management API answered 200 without JSON", status=200) from exc
    if not isinstance(body, dict):
        raise QueueReadError("management API answered 200 without a queue object", status=200)
    missing = [key for key in _COUNTS if not _count(body.get(key))]
    if missing:
        # A freshly declared queue has no counts until the next statistics emission.
        raise StatsNotReady(f"queue statistics lack {', '.join(missing)}", status=200)
    return QueueCounts(*(body[key] for key in _COUNTS))


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
