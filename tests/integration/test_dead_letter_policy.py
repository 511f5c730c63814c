"""The policy of infra/rabbitmq/definitions.json on a real RabbitMQ 4.0: the session's own broker, which
imports it at start as scripts/rabbitmq.sh and the manifests do. A dead-lettered row expires after the
policy's TTL, and a dead-letter queue keeps at most its max-length rows, dropping the oldest."""

import re
import time
from collections.abc import Iterator

import pytest

from kubejob import message
from tests.helpers import wait_for
from tests.helpers.broker import Broker, dead_letter_policy
from tests.helpers.rabbitmq_server import DockerRabbitmq


@pytest.fixture
def queue(rabbitmq_4: DockerRabbitmq, queue_name: str) -> Iterator[str]:
    """`queue_name` and the queues around it declared on the session's RabbitMQ 4.0, deleted after."""
    with rabbitmq_4.connection() as conn:
        Broker.declare(conn.channel(), queue_name)
    yield queue_name
    rabbitmq_4.delete_queue(queue_name)


def _dead_letter(broker: Broker, queue: str, rows: range) -> None:
    """Rows put in `queue` as the worker puts a row it gave up on into `<queue>.dead`: confirmed, with its error."""
    with broker.connection() as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for number in rows:
            body, properties = message.encode({"id": str(number)}, upload_id="u", row_number=number, line=number + 1)
            channel.basic_publish("", queue, body, message.dead_properties(properties, error="ValueError: poison"))


def _rows_in(broker: Broker, queue: str) -> list[int]:
    return [int((properties.headers or {})["row"]) for properties, _ in broker.drain(queue)]


def test_the_dead_letter_queues_of_a_broker_started_as_shipped_have_the_shipped_policy(
        rabbitmq_4: DockerRabbitmq, queue: str) -> None:
    policy = dead_letter_policy()
    for name in (message.dead_letter_queue(queue), message.limit_queue(queue)):
        # The management API's counts lag by its statistics interval (1 s as shipped).
        wait_for(lambda n=name: rabbitmq_4.counts(n).get("effective_policy_definition") == policy["definition"],
                 what=f"{name} to have the shipped policy", timeout=10, interval=0.2)
    assert rabbitmq_4.counts(queue).get("policy") in (None, "")
    assert rabbitmq_4.counts(message.retry_queue(queue)).get("policy") in (None, "")


def test_a_dead_lettered_row_expires_after_the_ttl_and_a_dead_letter_queue_keeps_its_newest_rows(
        rabbitmq_4: DockerRabbitmq, queue: str) -> None:
    shipped = dead_letter_policy()
    # The shipped policy with a tiny TTL and length, on this test's queues alone (a higher priority wins).
    tiny = shipped | {"name": f"{queue}-tiny", "pattern": rf"^{re.escape(queue)}\.(dead|limit)$", "priority": 100,
                      "definition": shipped["definition"] | {"message-ttl": 1000, "max-length": 3}}
    rabbitmq_4.set_policy(tiny)
    dead, limit = message.dead_letter_queue(queue), message.limit_queue(queue)
    try:
        wait_for(lambda: [rabbitmq_4.counts(name).get("policy") for name in (dead, limit)] == [tiny["name"]] * 2,
                 what="the tiny policy to apply", timeout=10, interval=0.2)
        _dead_letter(rabbitmq_4, dead, range(1, 2))
        published = time.monotonic()
        assert rabbitmq_4.depth(dead) == 1
        wait_for(lambda: rabbitmq_4.depth(dead) == 0, what="the row to expire", timeout=10, interval=0.05)
        expired_after = time.monotonic() - published
        _dead_letter(rabbitmq_4, limit, range(1, 6))
        kept = _rows_in(rabbitmq_4, limit)
    finally:
        rabbitmq_4.clear_policy(tiny["name"])
    assert 0.9 <= expired_after < 5.0, expired_after
    assert kept == [3, 4, 5]  # drop-head: past max-length the oldest go
