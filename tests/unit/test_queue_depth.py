"""The management API client on the answers a healthy broker never gives, through httpx.MockTransport.

The normal answers (counts, 404 for a queue not declared, 401) come from the real broker in
tests/integration/test_queue_depth.py.
"""

import json

import httpx
import pytest

from scaler.queue_counts import QueueCounts, QueueReadError, StatsNotReady
from scaler.queue_depth import ManagementClient

COUNTS = {"messages": 3, "messages_ready": 2, "messages_unacknowledged": 1, "consumers": 1}


def reader(answer) -> ManagementClient:
    """A client whose every request is answered by `answer(request)` instead of a server."""
    return ManagementClient(base_url="http://rabbitmq:15672", user="guest", password="guest", vhost="/",
                            queue="rows", timeout_s=1.0, transport=httpx.MockTransport(answer))


def answering(status: int, content: bytes) -> ManagementClient:
    return reader(lambda request: httpx.Response(status, content=content))


def test_a_queue_object_with_counts_is_read_from_the_queue_path():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json=COUNTS)

    # The control for the cases below: the same stand-in, answering as RabbitMQ does.
    assert reader(answer).read() == QueueCounts(3, 2, 1, 1)
    assert seen == [b"/api/queues/%2F/rows"]  # the vhost "/" quoted, or RabbitMQ answers 404


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_is_our_error(status):
    with pytest.raises(QueueReadError, match=str(status)) as caught:
        answering(status, b'{"error":"boom"}').read()
    assert caught.value.status == status


def test_a_timeout_is_our_error():
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(QueueReadError, match=r"timed out after 1\.0s"):
        reader(answer).read()


def test_404_not_from_rabbitmq_is_an_error_not_zero():
    # A proxy or a wrong base URL: depth 0 here would hide the backlog for good.
    with pytest.raises(QueueReadError, match="404"):
        answering(404, b"<html>no such path</html>").read()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {**COUNTS, "messages": None},
        {k: v for k, v in COUNTS.items() if k != "consumers"},
        {**COUNTS, "messages": "3"},
        {**COUNTS, "messages": True},
        {**COUNTS, "messages": -1},
    ],
    ids=["empty object", "null messages", "no consumers", "string count", "boolean count", "negative count"],
)
def test_200_without_counts_is_stats_not_ready_not_zero(body):
    with pytest.raises(StatsNotReady):
        answering(200, json.dumps(body).encode()).read()


@pytest.mark.parametrize("body", [b"[]", b"<html>not json</html>"], ids=["list", "not json"])
def test_200_that_is_not_a_queue_is_an_error(body):
    with pytest.raises(QueueReadError) as caught:
        answering(200, body).read()
    assert not isinstance(caught.value, StatsNotReady)
