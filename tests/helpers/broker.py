"""A handle on the real RabbitMQ, for tests and benchmarks: AMQP for messages, the management API for counts."""

import json
import os
import re
import uuid
from pathlib import Path

import httpx
import pika
import pika.exceptions

from kubejob import message
from tests.helpers.ledger import record_upload

# The policy that bounds the dead-letter queues, as scripts/rabbitmq.sh and infra/k8s/rabbitmq.yaml import it.
SHIPPED_DEFINITIONS = Path(__file__).resolve().parents[2] / "infra" / "rabbitmq" / "definitions.json"


def dead_letter_policy() -> dict:
    """The shipped policy on the dead-letter queues (name, pattern, definition...)."""
    return json.loads(SHIPPED_DEFINITIONS.read_text())["policies"][0]


def rows(count: int) -> list[dict[str, str]]:
    """`count` one-column rows whose ids are 0 .. count-1."""
    return [{"id": str(n)} for n in range(count)]


class Broker:
    """A broker as the services find it: by default the one RABBITMQ_HOST and friends name."""

    def __init__(self, *, host: str | None = None, port: int | None = None,
                 management_url: str | None = None) -> None:
        self.host = host or os.environ.get("RABBITMQ_HOST", "localhost")
        self.port = port or int(os.environ.get("RABBITMQ_PORT", "5672"))
        self.management_url = management_url or os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://localhost:15672")
        self.user, self.password = "guest", "guest"

    def environment(self) -> dict[str, str]:
        """The variables that point a service (and a Broker() made later) at this broker."""
        return {"RABBITMQ_HOST": self.host, "RABBITMQ_PORT": str(self.port),
                "RABBITMQ_MANAGEMENT_URL": self.management_url}

    def connection(self) -> pika.BlockingConnection:
        params = pika.ConnectionParameters(
            host=self.host, port=self.port, credentials=pika.PlainCredentials(self.user, self.password)
        )
        return pika.BlockingConnection(params)

    def check(self) -> None:
        """Raise unless AMQP and the management API both answer."""
        httpx.get(f"{self.management_url}/api/overview", auth=(self.user, self.password), timeout=5).raise_for_status()
        self.connection().close()

    @staticmethod
    def declare(channel, queue: str) -> None:
        """Declare the queues every upload of `queue` shares, as the producer and the worker do."""
        for name, arguments in message.declarations(queue):
            channel.queue_declare(name, durable=True, arguments=arguments)

    @classmethod
    def declare_upload(cls, channel, queue: str, upload_id: str) -> str:
        """Declare the queues of `queue` and the upload's own, as the producer does; return the upload's."""
        cls.declare(channel, queue)
        target = message.upload_queue(queue, upload_id)
        channel.queue_declare(target, durable=True, arguments=message.queue_arguments(queue))
        return target

    def publish_rows(self, queue: str, rows: list[dict[str, str]], *, confirm: bool = True,
                     tenant: str = "default", more: int = 0) -> str:
        """Record an upload of `rows` (and `more` the caller publishes itself) in the ledger (DATABASE_URL) as
        published, declare its queue as the producer does, and publish one producer-shaped message per row into it.

        With `confirm` each message is confirmed by the broker before the next; without it
        (much faster for 100k rows) the caller must count them in before relying on them.
        Returns the upload id the messages carry, new for each call.
        """
        upload_id = uuid.uuid4().hex
        record_upload(upload_id, queue=message.upload_queue(queue, upload_id), rows=len(rows) + more, tenant=tenant)
        with self.connection() as conn:
            channel = conn.channel()
            if confirm:
                channel.confirm_delivery()
            self.fill_upload(channel, queue, upload_id, rows)
        return upload_id

    @classmethod
    def fill_upload(cls, channel, queue: str, upload_id: str, rows: list[dict[str, str]]) -> str:
        """Declare the upload's queue (declare_upload) and publish one producer-shaped message per row into it, on
        `channel`, which the caller may have put in confirm mode; return the queue's name."""
        target = cls.declare_upload(channel, queue, upload_id)
        for number, row in enumerate(rows, start=1):
            body, properties = message.encode(row, upload_id=upload_id, row_number=number, line=number + 1)
            channel.basic_publish("", target, body, properties)
        return target

    def import_definitions(self, path: Path) -> None:
        """Import a definitions file through the management API, as scripts/rabbitmq.sh does."""
        httpx.post(f"{self.management_url}/api/definitions", content=path.read_bytes(), auth=(self.user, self.password),
                   headers={"content-type": "application/json"}, timeout=30).raise_for_status()

    def set_policy(self, policy: dict) -> None:
        """Set one policy (as definitions.json writes it) in the default virtual host."""
        body = {key: policy[key] for key in ("pattern", "definition", "priority", "apply-to")}
        httpx.put(f"{self.management_url}/api/policies/%2F/{policy['name']}", json=body,
                  auth=(self.user, self.password), timeout=30).raise_for_status()

    def clear_policy(self, name: str) -> None:
        httpx.delete(f"{self.management_url}/api/policies/%2F/{name}", auth=(self.user, self.password),
                     timeout=30).raise_for_status()

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` right now (passive declare, not the lagging stats)."""
        with self.connection() as conn:
            return conn.channel().queue_declare(queue, passive=True).method.message_count

    def upload_queues(self, queue: str) -> list[str]:
        """The names of the uploads' queues of `queue` that exist now."""
        pattern = "^" + re.escape(message.upload_queue(queue, ""))
        names: list[str] = []
        page, pages = 1, 1
        while page <= pages:  # the management API gives at most 500 a page
            response = httpx.get(f"{self.management_url}/api/queues/%2F", auth=(self.user, self.password),
                                 timeout=10, params={"page": page, "page_size": 500, "name": pattern,
                                                     "use_regex": "true", "columns": "name"})
            response.raise_for_status()
            listed = response.json()
            names += [item["name"] for item in listed["items"]]
            page, pages = page + 1, listed["page_count"]
        return names

    def backlog(self, queue: str) -> int:
        """Messages ready right now in all the uploads' queues of `queue` together."""
        with self.connection() as conn:
            channel = conn.channel()
            total = 0
            for name in self.upload_queues(queue):
                try:
                    total += channel.queue_declare(name, passive=True).method.message_count
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:  # deleted since it was listed: it holds nothing
                        raise
                    channel = conn.channel()
            return total

    def counts(self, queue: str) -> dict:
        """The queue as the management API reports it (as fresh as its statistics interval); {} if unknown."""
        response = httpx.get(f"{self.management_url}/api/queues/%2F/{queue}", auth=(self.user, self.password),
                             timeout=5)
        return response.json() if response.status_code == 200 else {}

    def node(self) -> dict:
        """The broker's (first) node as the management API reports it: `mem_used`, `os_pid` and the rest."""
        response = httpx.get(f"{self.management_url}/api/nodes", auth=(self.user, self.password), timeout=10)
        response.raise_for_status()
        return response.json()[0]

    def reported_messages(self, queue: str) -> int | None:
        """`messages` as the management API reports it: None before its first count of the queue."""
        return self.counts(queue).get("messages")

    def exists(self, queue: str) -> bool:
        with self.connection() as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return False
                raise
        return True

    def drain(self, queue: str) -> list[tuple[pika.spec.BasicProperties, bytes]]:
        """Take every ready message off `queue` and return it."""
        taken = []
        with self.connection() as conn:
            channel = conn.channel()
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return taken
                taken.append((props, body))

    def delete_queue(self, queue: str) -> None:
        """Delete the queues of `queue`, the uploads' and those they share, if they exist."""
        with self.connection() as conn:
            channel = conn.channel()
            for name in [*self.upload_queues(queue), *(name for name, _ in message.declarations(queue))]:
                channel.queue_delete(name)
            channel.exchange_delete(message.retry_exchange(queue))
