"""The producer-to-worker message contract: what one side encodes, the other decodes."""

import json

import pika
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubejob import message


def test_what_the_producer_encodes_the_worker_decodes() -> None:
    row = {"id": "7", "name": "Zoë", "note": 'a "quoted"\nline'}
    body, properties = message.encode(row, upload_id="u1", row_number=3, line=5)
    decoded = message.decode(body, properties)
    assert decoded == message.Row(data=row, upload_id="u1", row=3, attempt=1)
    assert properties.delivery_mode == pika.DeliveryMode.Persistent.value
    assert properties.message_id == "u1:3"
    assert properties.content_type == "application/json"
    assert properties.headers == {"upload_id": "u1", "row": 3, "line": 5}


@given(st.dictionaries(st.text(), st.text()))
def test_any_row_is_a_compact_utf8_json_object_any_reader_takes(row: dict[str, str]) -> None:
    body, properties = message.encode(row, upload_id="u1", row_number=1, line=2)
    assert json.loads(body.decode("utf-8")) == row
    assert body == json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
    assert message.decode(body, properties).data == row


@given(st.dictionaries(st.text(), st.text(), min_size=1))  # a header names one column at least
def test_no_body_is_larger_than_largest_body_says(row: dict[str, str]) -> None:
    body, _ = message.encode(row, upload_id="u1", row_number=1, line=2)
    assert len(body) <= message.largest_body(columns=len(row), name_chars=sum(map(len, row)),
                                             value_chars=sum(map(len, row.values())))


def test_a_row_of_control_characters_is_exactly_as_large_as_largest_body_says() -> None:
    row = {"\x01" * 3: "\x1f" * 1000, "\x02": ""}
    body, _ = message.encode(row, upload_id="u1", row_number=1, line=2)
    assert len(body) == message.largest_body(columns=2, name_chars=4, value_chars=1000) == 6 * 1004 + 13


def test_a_retry_keeps_identity_counts_the_attempt_and_waits_its_delay() -> None:
    body, properties = message.encode({"id": "1"}, upload_id="u1", row_number=1, line=2)
    properties.headers["x-delivery-count"] = 2  # the broker's, about the old message
    retried = message.retry_properties(properties, attempt=2, delay_s=1.5)
    decoded = message.decode(body, retried)
    assert (decoded.upload_id, decoded.row, decoded.attempt) == ("u1", 1, 2)
    assert retried.message_id == properties.message_id
    assert retried.delivery_mode == pika.DeliveryMode.Persistent.value
    assert retried.expiration == "1500"
    assert "x-delivery-count" not in retried.headers


def test_a_row_given_up_on_carries_its_last_error() -> None:
    _, properties = message.encode({"id": "1"}, upload_id="u1", row_number=1, line=2)
    dead = message.dead_properties(message.retry_properties(properties, attempt=3, delay_s=1), error="boom")
    assert dead.headers == {"upload_id": "u1", "row": 1, "line": 2, "attempt": 3, "error": "boom"}
    assert dead.expiration is None


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_a_bad_message(body: bytes) -> None:
    with pytest.raises(message.BadMessage):
        message.decode(body, pika.BasicProperties(headers={"upload_id": "u1", "row": 1}))


def test_the_queue_is_a_quorum_queue_whose_broker_dead_letters_the_worker_records() -> None:
    arguments = message.queue_arguments("rows")
    assert arguments["x-queue-type"] == "quorum" and arguments["x-delivery-limit"] == message.DELIVERY_LIMIT
    assert (arguments["x-dead-letter-exchange"], arguments["x-dead-letter-routing-key"]) == ("", "rows.limit")


def test_a_retry_waits_in_the_shared_retry_queue_and_then_returns_to_its_uploads_queue() -> None:
    declared = dict(message.declarations("rows"))
    # No routing key of its own: an expired row is dead-lettered with the one it was published with, its queue's.
    assert declared["rows.retry"] == {"x-dead-letter-exchange": ""}
    assert message.retry_exchange("rows") == "rows.retry"
    # Dead-letter targets first: what is dead-lettered into a queue that does not exist is lost. The uploads'
    # queues come after, each declared as its upload begins.
    assert list(declared) == ["rows.dead", "rows.limit", "rows.retry"]
    assert message.upload_queue("rows", "u1") == "rows.upload.u1"


def test_a_row_names_its_upload_whose_queue_it_is_in() -> None:
    _, properties = message.encode({"id": "1"}, upload_id="u1", row_number=1, line=2)
    assert message.upload_of(properties) == "u1"
    assert message.upload_of(pika.BasicProperties()) == ""
