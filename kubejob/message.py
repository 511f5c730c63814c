"""The message contract between producer and worker (documented in docs/message.md).

One message per CSV row:
- body: the row as a JSON object, header name -> string value (UTF-8);
- properties: persistent, content type application/json, message_id "<upload_id>:<row>";
- headers: `upload_id` (str), `row` (1-based data row number), `line` (the CSV line it starts on).
The worker adds `attempt` (int, absent means 1) when it retries a row, and `error` (str) when
it gives up on one and puts it in "<queue>.dead"; a row whose body was larger than
MAX_MESSAGE_BYTES goes there with an empty body and `body_bytes` (int), the size it had.

Each upload's rows go to a queue of their own, "<queue>.upload.<upload_id>" (a quorum queue),
so that workers can share themselves fairly between uploads and tenants, and pause or cancel
one upload without touching another. Shared by every upload: "<queue>.retry" holds a row waiting
to be retried (its expiration is the delay); it is fed by the fanout exchange of the same name,
with the routing key of the queue the row came from, and dead-letters the row back there when it
expires. "<queue>.limit" receives what the broker itself dead-letters at the delivery limit,
which the worker records in the ledger and moves on to "<queue>.dead".
"""

from typing import Any, NamedTuple, TypeAlias

import orjson
import pika

from kubejob.errors import Permanent

CONTENT_TYPE = "application/json"


class BadMessage(Permanent, ValueError):
    """A message that no retry can make valid."""


class Properties(NamedTuple):  # a tuple: made for every row, cheaper than a pika.BasicProperties
    """The properties of a message the contract uses, named as pika.BasicProperties names them.

    The only properties the services read and encode without pika (kubejob.frames).
    """

    content_type: str | None
    headers: dict[str, Any] | None  # as pika's: any AMQP value
    delivery_mode: int | None
    message_id: str | None


AnyProperties: TypeAlias = Properties | pika.BasicProperties


class Delivery(NamedTuple):  # a tuple: made for every row, on the worker's busiest thread
    """A message delivered to a consumer, as the worker keeps it."""

    tag: int
    properties: AnyProperties  # pika's for the few messages pika reads
    body: bytes
    redelivered: bool
    dropped: int = 0  # the size of a body too large to keep, which `body` (empty) is not; 0 for any other


class Row(NamedTuple):  # a tuple: made for every row a worker handles, cheaper than a dataclass
    data: dict[str, str]
    upload_id: str
    row: int
    attempt: int


# The broker's own bound on deliveries that end without an ack (a worker that died holding the
# row). The worker counts such deaths itself and gives up after WORKER_MAX_ATTEMPTS; this is
# the backstop, RabbitMQ 4's default. RabbitMQ 4.3 and later count only basic.reject here, so
# the worker's own count is what bounds a row that kills its process.
DELIVERY_LIMIT = 20


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def retry_queue(queue: str) -> str:
    return f"{queue}.retry"


def limit_queue(queue: str) -> str:
    return f"{queue}.limit"


def upload_queue(queue: str, upload_id: str) -> str:
    """The queue that holds one upload's rows."""
    return f"{queue}.upload.{upload_id}"


def retry_exchange(queue: str) -> str:
    """The fanout exchange a worker publishes a row to retry into: it routes to "<queue>.retry" whatever the key,
    and the row keeps its routing key, the queue it came from, which "<queue>.retry" dead-letters it back to."""
    return retry_queue(queue)


def queue_arguments(queue: str) -> dict[str, str | int]:
    """Arguments every upload's queue is declared with, by whichever service declares it first.

    A quorum queue counts the deliveries of each message (`x-delivery-count`), replicates it,
    and is RabbitMQ's recommended durable queue type. What reaches its delivery limit goes to
    "<queue>.limit", never straight to "<queue>.dead", so that the worker records it first.
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": limit_queue(queue),
    }


def declarations(queue: str) -> list[tuple[str, dict[str, str | int]]]:
    """The queues (name, arguments) every upload shares, in the order to declare them, before any upload's queue.

    A dead-letter target must exist before anything is dead-lettered into it. "<queue>.retry" has no
    dead-letter routing key: an expired row goes back with its own, the queue it came from.
    """
    return [
        (dead_letter_queue(queue), {}),
        (limit_queue(queue), {}),
        (retry_queue(queue), {"x-dead-letter-exchange": ""}),
    ]


def migration_hint(queue: str, reason: str) -> str:
    """What to do when the queue exists with other arguments (declared by an earlier version)."""
    return (f"queue {queue!r} exists with other arguments than this version declares ({reason}): stop the "
            f"producer, let the workers drain {queue!r} (or move its messages with a shovel), delete it "
            f"(rabbitmqctl delete_queue {queue}) and start again: see docs/operations.md, 'Upgrading'")


# The most bytes the body spends on one character of a name or value: JSON escapes a control character
# as \u00XX. Every other character is written as its UTF-8 (at most 4 bytes), and " and \ as 2.
ESCAPED_CHAR_BYTES = 6
# What each field adds around its name and value: "name":"value", (the last one's comma is the closing brace).
FIELD_BYTES = 6


def largest_body(*, columns: int, name_chars: int, value_chars: int) -> int:
    """The most bytes the body of a row can be: `columns` fields whose names and values hold so many characters.

    A worker holds a full prefetch of bodies, each at most this and at most MAX_MESSAGE_BYTES.
    """
    return 1 + FIELD_BYTES * columns + ESCAPED_CHAR_BYTES * (name_chars + value_chars)


def encode(row: dict[str, str], *, upload_id: str, row_number: int, line: int) -> tuple[bytes, pika.BasicProperties]:
    """Body and properties of the message for one row."""
    body = orjson.dumps(row)  # compact UTF-8, as json.dumps(ensure_ascii=False, separators=(",", ":")) gives
    properties = pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=f"{upload_id}:{row_number}",
        headers={"upload_id": upload_id, "row": row_number, "line": line},
    )
    return body, properties


def decode(body: bytes, properties: AnyProperties) -> Row:
    """The row a message carries; raises BadMessage if the body is not a JSON object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # invalid UTF-8 included
        raise BadMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadMessage("body is not a JSON object")
    return named_row(properties, data)


def upload_of(properties: AnyProperties) -> str:
    """The upload a message's headers say it is a row of ("" if none): the upload whose queue it is in."""
    return str((properties.headers or {}).get("upload_id", ""))


def named_row(properties: AnyProperties, data: dict[str, str] | None = None) -> Row:
    """The row a message's headers name, with `data`: none for a message whose body was not read."""
    headers = properties.headers or {}
    return Row(
        data={} if data is None else data,
        upload_id=upload_of(properties),
        row=int(headers.get("row", 0)),
        attempt=int(headers.get("attempt", 1)),
    )


def retry_properties(properties: AnyProperties, *, attempt: int, delay_s: float) -> pika.BasicProperties:
    """The same message's properties for its next attempt, `delay_s` from now (in "<queue>.retry")."""
    return _copy(properties, attempt=attempt, expiration=str(max(0, round(delay_s * 1000))))


def dead_properties(properties: AnyProperties, *, error: str, dropped: int = 0) -> pika.BasicProperties:
    """The same message's properties as it goes to "<queue>.dead", with the last error.

    A message whose body of `dropped` bytes was too large to keep goes without it, and says its size.
    """
    if dropped:
        return _copy(properties, error=error, body_bytes=dropped)
    return _copy(properties, error=error)


def _copy(properties: AnyProperties, *, expiration: str | None = None,
          **headers: object) -> pika.BasicProperties:
    # The broker's own headers describe the old message's journey, not the new one's.
    kept = {k: v for k, v in (properties.headers or {}).items() if not k.startswith("x-")}
    return pika.BasicProperties(
        content_type=properties.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=properties.message_id,
        headers=kept | headers,
        expiration=expiration,
    )


def death_reason(properties: pika.BasicProperties) -> str:
    """Why the broker dead-lettered a message, from its x-death header ("delivery_limit"...)."""
    deaths = (properties.headers or {}).get("x-death") or [{}]
    return str(deaths[0].get("reason", "unknown"))
