"""The producer-to-worker message contract: what one side encodes, the other decodes."""

import pika
import pytest

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


def test_a_retry_keeps_identity_and_counts_the_attempt() -> None:
    body, properties = message.encode({"id": "1"}, upload_id="u1", row_number=1, line=2)
    retried = message.retry_properties(properties, attempt=2)
    decoded = message.decode(body, retried)
    assert (decoded.upload_id, decoded.row, decoded.attempt) == ("u1", 1, 2)
    assert retried.message_id == properties.message_id
    assert retried.delivery_mode == pika.DeliveryMode.Persistent.value


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_a_bad_message(body: bytes) -> None:
    with pytest.raises(message.BadMessage):
        message.decode(body, pika.BasicProperties(headers={"upload_id": "u1", "row": 1}))


def test_the_queue_dead_letters_into_its_dead_queue() -> None:
    arguments = message.queue_arguments("rows")
    assert (arguments["x-dead-letter-exchange"], arguments["x-dead-letter-routing-key"]) == ("", "rows.dead")
