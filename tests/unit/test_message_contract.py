"""The producer-to-worker message contract, checked from both sides."""

import pika

from producer import message as produced
from worker import message as consumed


def test_what_the_producer_encodes_the_worker_decodes() -> None:
    row = {"id": "7", "name": "Zoë", "note": 'a "quoted"\nline'}
    body, properties = produced.encode(row, upload_id="u1", row_number=3, line=5)
    decoded = consumed.decode(body, properties)
    assert decoded == consumed.Row(data=row, upload_id="u1", row=3, attempt=1)
    assert properties.delivery_mode == pika.DeliveryMode.Persistent.value
    assert properties.message_id == "u1:3"
    assert properties.content_type == "application/json"


def test_a_retry_keeps_identity_and_counts_the_attempt() -> None:
    body, properties = produced.encode({"id": "1"}, upload_id="u1", row_number=1, line=2)
    retried = consumed.retry_properties(properties, attempt=2)
    decoded = consumed.decode(body, retried)
    assert (decoded.upload_id, decoded.row, decoded.attempt) == ("u1", 1, 2)
    assert retried.message_id == properties.message_id
    assert retried.delivery_mode == pika.DeliveryMode.Persistent.value


def test_both_sides_declare_the_queue_alike() -> None:
    assert produced.queue_arguments("rows") == consumed.queue_arguments("rows")
    assert produced.dead_letter_queue("rows") == consumed.dead_letter_queue("rows") == "rows.dead"
