"""Reads the unacknowledged counts of a family of queues from the RabbitMQ management HTTP API.

AMQP gives a queue's ready messages and consumers (scaler.queue_live), not the messages delivered
and not yet acked; only the management API counts those. One listing answers for every upload's
queue at once, filtered by the broker on their common prefix and cut to the columns read: a
poll makes one call per RabbitMQ page (at most 500 queues each), not one per queue.

Errors: every failure to get a trustworthy listing is a `QueueReadError` (401, 5xx, timeout,
unreachable, malformed answer). A queue listed without its counts, as one declared less than a
statistics interval ago is, maps to None: the caller knows it exists, not what it holds unacked.
"""

import math
import re
from typing import Any
from urllib.parse import quote

import httpx

from scaler.queue_counts import QueueReadError

PAGE_SIZE = 500  # the most RabbitMQ's management API returns in one page


class ManagementClient:
    """A client of the management API for one vhost; reuses its connection between polls."""

    def __init__(self, *, base_url: str, user: str, password: str, vhost: str, timeout_s: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._path = f"/api/queues/{quote(vhost, safe='')}"
        self._user = user
        self._timeout_s = timeout_s
        # `transport` lets a test answer 500 or time out without a server (httpx.MockTransport).
        self._http = httpx.Client(base_url=base_url, auth=(user, password), timeout=timeout_s,
                                  transport=transport)

    def unacked(self, prefix: str) -> dict[str, int | None]:
        """Each queue whose name starts with `prefix`, and its unacknowledged messages (None while it has no counts),
        as fresh as the broker's statistics interval."""
        found: dict[str, int | None] = {}
        page, pages = 1, 1
        while page <= pages:
            body = self._page(prefix, page)
            found.update(_unacked(body["items"]))
            pages = max(1, math.ceil(body["filtered_count"] / PAGE_SIZE))
            page += 1
        return found

    def close(self) -> None:
        """Release the connection."""
        self._http.close()

    def _page(self, prefix: str, page: int) -> dict[str, Any]:
        params: dict[str, str | int] = {
            "page": page, "page_size": PAGE_SIZE, "name": "^" + re.escape(prefix), "use_regex": "true",
            "columns": "name,messages_unacknowledged",
        }
        try:
            response = self._http.get(self._path, params=params)
        except httpx.TimeoutException as exc:
            raise QueueReadError(f"management API timed out after {self._timeout_s}s") from exc
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise QueueReadError(f"management API unreachable: {reason}") from exc
        return self._listing(response)

    def _listing(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status == 401:
            raise QueueReadError(f"management API rejected user {self._user!r} (HTTP 401)", status=status)
        if status != 200:
            # A 404 here is a wrong base URL or vhost, never "no queue": that would be an empty list.
            raise QueueReadError(f"management API answered HTTP {status}", status=status)
        try:
            body = response.json()
        except ValueError as exc:
            raise QueueReadError("management API answered 200 without JSON", status=200) from exc
        if not (isinstance(body, dict) and isinstance(body.get("items"), list) and _count(body.get("filtered_count"))
                and all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in body["items"])):
            raise QueueReadError("management API answered 200 without a page of queues", status=200)
        return body


def _unacked(items: list[dict[str, Any]]) -> dict[str, int | None]:
    # A freshly declared queue is listed without counts until the next statistics emission.
    return {item["name"]: item["messages_unacknowledged"] if _count(item.get("messages_unacknowledged")) else None
            for item in items}


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
