"""The management API client on the answers a healthy broker never gives, through httpx.MockTransport.

The normal answers (counts, a queue without statistics yet, 401) come from the real broker in
tests/integration/test_queue_depth.py.
"""

import json

import httpx
import pytest

from scaler.queue_counts import QueueReadError
from scaler.queue_depth import PAGE_SIZE, ManagementClient

PREFIX = "rows.upload."


def page(items: list[dict], filtered: int | None = None) -> dict:
    return {"items": items, "filtered_count": len(items) if filtered is None else filtered, "page_size": PAGE_SIZE}


def reader(answer) -> ManagementClient:
    """A client whose every request is answered by `answer(request)` instead of a server."""
    return ManagementClient(base_url="http://rabbitmq:15672", user="guest", password="guest", vhost="/",
                            timeout_s=1.0, transport=httpx.MockTransport(answer))


def answering(status: int, content: bytes) -> ManagementClient:
    return reader(lambda request: httpx.Response(status, content=content))


def test_one_call_lists_the_family_filtered_by_the_broker_and_cut_to_the_columns_read():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=page([{"name": "rows.upload.a", "messages_unacknowledged": 3},
                                              {"name": "rows.upload.b"}]))

    # The control for the cases below: the same stand-in, answering as RabbitMQ does.
    assert reader(answer).unacked(PREFIX) == {"rows.upload.a": 3, "rows.upload.b": None}
    (url,) = seen
    assert url.raw_path.startswith(b"/api/queues/%2F?")  # the vhost "/" quoted, or RabbitMQ answers 404
    assert dict(url.params) == {"page": "1", "page_size": str(PAGE_SIZE), "name": r"^rows\.upload\.",
                                "use_regex": "true", "columns": "name,messages_unacknowledged"}


def test_more_queues_than_a_page_takes_one_call_per_page():
    names = [f"rows.upload.{n}" for n in range(PAGE_SIZE + 3)]

    def answer(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        chunk = names[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
        return httpx.Response(200, json=page([{"name": n, "messages_unacknowledged": 1} for n in chunk],
                                             filtered=len(names)))

    assert reader(answer).unacked(PREFIX) == dict.fromkeys(names, 1)


@pytest.mark.parametrize("status", [404, 500, 502, 503])
def test_an_error_status_is_our_error_never_an_empty_family(status):
    # A 404 is a wrong base URL or vhost: an empty list here would hide the unacked rows for good.
    with pytest.raises(QueueReadError, match=str(status)) as caught:
        answering(status, b'{"error":"boom"}').unacked(PREFIX)
    assert caught.value.status == status


def test_a_timeout_is_our_error():
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(QueueReadError, match=r"timed out after 1\.0s"):
        reader(answer).unacked(PREFIX)


@pytest.mark.parametrize(
    "item",
    [{"name": "rows.upload.a", "messages_unacknowledged": value} for value in (None, "3", True, -1)],
    ids=["null", "string count", "boolean count", "negative count"],
)
def test_a_count_that_is_not_one_is_unknown_not_zero(item):
    assert answering(200, json.dumps(page([item])).encode()).unacked(PREFIX) == {"rows.upload.a": None}


@pytest.mark.parametrize("body", [b"[]", b"<html>not json</html>", b'{"items": [{"messages": 1}], "filtered_count": 1}',
                                  b'{"items": []}'],
                         ids=["list", "not json", "item without name", "no filtered count"])
def test_200_that_is_not_a_page_of_queues_is_an_error(body):
    with pytest.raises(QueueReadError, match="200"):
        answering(200, body).unacked(PREFIX)
