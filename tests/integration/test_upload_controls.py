"""Cancel, pause and resume one upload, against a real producer, RabbitMQ and PostgreSQL: who may, what each state
allows, a cancel stopping the request still publishing, and the queues of finished and cancelled uploads deleted
once their grace is over.

The module's keys live in a database of its own: a key in the run's shared one would end the open mode the
other tests upload in.
"""

import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from kubejob import ledger as schema
from kubejob.message import upload_queue
from producer.app import create_app
from producer.settings import Settings
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.keys import bearer, create_key
from tests.helpers.producer import csv_file, producer
from worker.ledger import Ledger as WorkerLedger
from worker.ledger import RowOutcome

CSV = b"id,name\n1,a\n2,b\n"
NO_UPLOAD = "0" * 32
ROUTES = {"cancel": ("DELETE", "/uploads/{id}"), "pause": ("POST", "/uploads/{id}/pause"),
          "resume": ("POST", "/uploads/{id}/resume")}
PUBLISHING_ROWS = 300_000  # several seconds of publishing: long enough to be cancelled or paused part-way
AGAIN = "to have its rows handled, upload the file again (with a new Idempotency-Key, if you send one)"


@pytest.fixture(scope="module")
def made(keys_ledger: str) -> dict[str, str]:
    """Keys of tenants alpha and beta that upload and read, one of alpha's that only reads, and an admin's."""
    return {"alpha": create_key("alpha", "upload", "read"), "beta": create_key("beta", "upload", "read"),
            "alpha_reader": create_key("alpha", "read"), "admin": create_key("ops", "upload", "read", "admin")}


@pytest.fixture
def client(made: dict[str, str], queue_name: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        yield client


def send(client: TestClient | httpx.Client, key: str, data: bytes = CSV, **headers: str) -> httpx.Response:
    return client.post("/upload", files={"file": ("data.csv", data, "text/csv")}, headers=bearer(key) | headers)


def uploaded(client: TestClient | httpx.Client, key: str) -> str:
    response = send(client, key)
    assert response.status_code == 200, response.text
    return response.json()["upload_id"]


def control(client: TestClient | httpx.Client, action: str, upload_id: str, key: str | None) -> httpx.Response:
    method, path = ROUTES[action]
    return client.request(method, path.format(id=upload_id), headers=bearer(key) if key else {})


def status(client: TestClient | httpx.Client, upload_id: str, key: str) -> dict:
    return client.get(f"/uploads/{upload_id}", headers=bearer(key)).json()


def finish(url: str, upload_id: str, rows: int) -> None:
    """Record an outcome for each of the upload's rows, as workers do: its last one fails."""
    ledger = WorkerLedger(url, timeout_s=5)
    ledger.open()
    try:
        ledger.record([RowOutcome(upload_id, row=n, attempts=1, error="boom" if n == rows else None)
                       for n in range(1, rows + 1)], redelivered=collections.Counter())
    finally:
        ledger.close()


def open_ids(url: str, queue: str) -> set[str]:
    """The uploads into `queue` that workers and the scaler serve, as they read them."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return {upload.id for upload in schema.open_uploads(conn, queue)}


def test_only_the_owning_tenant_with_the_upload_scope_may_cancel_pause_or_resume(client: TestClient,
                                                                                 made: dict[str, str]) -> None:
    upload_id = uploaded(client, made["alpha"])
    for action in ROUTES:
        anonymous = control(client, action, upload_id, None)
        assert (anonymous.status_code, anonymous.headers["www-authenticate"]) == (401, "Bearer"), action
        reader = control(client, action, upload_id, made["alpha_reader"])
        assert (reader.status_code, reader.json()) == (403, {"error": "this credential lacks the `upload` scope"})
        theirs, nobody = control(client, action, upload_id, made["beta"]), control(client, action, NO_UPLOAD,
                                                                                 made["alpha"])
        assert (theirs.status_code, theirs.json()) == (404, {"error": f"no upload {upload_id!r}"}), action
        assert (nobody.status_code, nobody.json()) == (404, {"error": f"no upload {NO_UPLOAD!r}"}), action
        admin = control(client, action, upload_id, made["admin"])  # may read it, may not change it
        assert admin.status_code == 403 and admin.json()["error"] == (
            f"upload {upload_id!r} belongs to tenant 'alpha': only a credential of that tenant with the `upload` "
            "scope may cancel, pause or resume it")
    after = status(client, upload_id, made["alpha"])
    assert (after["state"], after["paused_at"], after["cancelled_at"]) == ("processing", None, None)


def test_pause_and_resume_answer_the_status_and_again_change_nothing(client: TestClient, made: dict[str, str],
                                                                      broker: Broker) -> None:
    upload_id, key = uploaded(client, made["alpha"]), made["alpha"]
    paused = control(client, "pause", upload_id, key)
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused" and paused.json()["paused_at"] is not None
    assert status(client, upload_id, key) == paused.json(), "the answer is the status, and a read after says it"
    assert control(client, "pause", upload_id, key).json() == paused.json(), "paused since the first pause"
    resumed = control(client, "resume", upload_id, key)
    assert resumed.status_code == 200 and (resumed.json()["state"], resumed.json()["paused_at"]) == ("processing", None)
    assert control(client, "resume", upload_id, key).json() == resumed.json() == status(client, upload_id, key)
    assert broker.depth(resumed.json()["queue"]) == 2, "its rows wait in its queue throughout"


def test_cancel_wins_over_pause_again_changes_nothing_and_leaves_nothing_to_pause_or_resume(
        client: TestClient, made: dict[str, str]) -> None:
    upload_id, key = uploaded(client, made["alpha"]), made["alpha"]
    assert control(client, "pause", upload_id, key).status_code == 200
    cancelled = control(client, "cancel", upload_id, key)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["state"], body["cancelled"], body["done"], body["failed"], body["rows"]) == ("cancelled", 2, 0, 0, 2)
    assert body["cancelled_at"] is not None and body["eta_seconds"] is None
    assert control(client, "cancel", upload_id, key).json() == body == status(client, upload_id, key)
    for action, done in (("pause", "paused"), ("resume", "resumed")):
        refused = control(client, action, upload_id, key)
        assert (refused.status_code, refused.json()) == (409, {
            "error": f"upload {upload_id!r} was cancelled, so it cannot be {done}; {AGAIN}"}), action
    assert status(client, upload_id, key) == body


def test_a_done_upload_cannot_be_cancelled_nor_paused(client: TestClient, made: dict[str, str],
                                                      keys_ledger: str) -> None:
    upload_id, key = uploaded(client, made["alpha"]), made["alpha"]
    finish(keys_ledger, upload_id, rows=2)
    for action in ("cancel", "pause"):
        refused = control(client, action, upload_id, key)
        assert (refused.status_code, refused.json()) == (409, {
            "error": f"upload {upload_id!r} is done: each of its 2 rows has an outcome, so there is nothing left to "
                     f"{action}"}), action
    assert control(client, "resume", upload_id, key).json()["state"] == "done", "not paused: nothing to undo"
    after = status(client, upload_id, key)
    assert (after["state"], after["done"], after["failed"], after["cancelled"]) == ("done", 1, 1, 0)


def test_a_keyed_retry_of_a_cancelled_upload_is_refused_and_publishes_nothing(
        client: TestClient, made: dict[str, str], broker: Broker, queue_name: str) -> None:
    key, alpha = {"Idempotency-Key": f"cancelled-{queue_name}"}, made["alpha"]
    first = send(client, alpha, **key)
    assert first.status_code == 200, first.text
    upload_id = first.json()["upload_id"]
    assert control(client, "cancel", upload_id, alpha).status_code == 200
    retry = send(client, alpha, **key)
    assert (retry.status_code, retry.json()) == (409, {
        "error": f"the upload of this Idempotency-Key, {upload_id}, was cancelled, and a cancelled upload is never "
                 "taken up again: to upload the file anew, send it with a new Idempotency-Key",
        "upload_id": upload_id, "rows": 2, "confirmed": 2})
    assert status(client, upload_id, alpha)["state"] == "cancelled"
    assert broker.backlog(queue_name) == 2, "nothing published again"
    anew = send(client, alpha, **{"Idempotency-Key": f"anew-{queue_name}"})
    assert anew.status_code == 200 and anew.json()["upload_id"] != upload_id


def test_an_upload_is_open_to_workers_once_its_queue_exists_and_a_cancelled_one_is_never_published(
        made: dict[str, str], broker: Broker, queue_name: str, keys_ledger: str) -> None:
    alpha, kept, dropped = made["alpha"], {"Idempotency-Key": f"kept-{queue_name}"}, {
        "Idempotency-Key": f"dropped-{queue_name}"}
    with TestClient(create_app(Settings(queue_name=queue_name, rabbitmq_port=1))) as down:  # RabbitMQ unreachable
        interrupted = [send(down, alpha, **key) for key in (kept, dropped)]
        assert [answer.status_code for answer in interrupted] == [503, 503]
        kept_id, dropped_id = (answer.json()["upload_id"] for answer in interrupted)
        assert control(down, "cancel", dropped_id, alpha).json()["state"] == "cancelled"
    assert not open_ids(keys_ledger, queue_name) & {kept_id, dropped_id}, "recorded, but no queue to consume"
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        assert send(client, alpha, **kept).json()["upload_id"] == kept_id
        assert send(client, alpha, **dropped).status_code == 409
    assert open_ids(keys_ledger, queue_name) & {kept_id, dropped_id} == {kept_id}
    assert broker.upload_queues(queue_name) == [upload_queue(queue_name, kept_id)]
    assert broker.depth(upload_queue(queue_name, kept_id)) == 2


class Background:
    """A POST /upload of `path` sent on a thread of its own; `response` and `answered_at` once it is answered."""

    def __init__(self, url: str, path: Path, key: str) -> None:
        self.response: httpx.Response | None = None
        self.answered_at = 0.0
        self._thread = threading.Thread(target=self._send, args=(url, path, key))
        self._thread.start()

    def _send(self, url: str, path: Path, key: str) -> None:
        with open(path, "rb") as f:
            self.response = httpx.post(f"{url}/upload", files={"file": (path.name, f, "text/csv")},
                                       headers=bearer(key), timeout=120)
        self.answered_at = time.monotonic()

    def answer(self) -> httpx.Response:
        self._thread.join(timeout=120)
        assert self.response is not None
        return self.response


def publishing(url: str, key: str) -> dict:
    """The tenant's upload being published, once the broker has confirmed some of its rows."""
    def found() -> dict | None:
        uploads = httpx.get(f"{url}/uploads", headers=bearer(key), timeout=5).json()["uploads"]
        return next((u for u in uploads if u["state"] in ("publishing", "paused") and u["confirmed"] > 0), None)

    return wait_for(found, what="an upload part-way published", timeout=60, interval=0.02)


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("controls") / "big.csv"
    path.write_bytes(csv_file(PUBLISHING_ROWS))
    return path


def test_a_cancel_stops_the_request_publishing_the_upload_within_a_second(
        made: dict[str, str], broker: Broker, queue_name: str, big_csv: Path) -> None:
    alpha = made["alpha"]
    with producer(queue_name) as (url, _pid):
        sending = Background(url, big_csv, alpha)
        upload = publishing(url, alpha)
        cancelled = httpx.delete(f"{url}/uploads/{upload['upload_id']}", headers=bearer(alpha), timeout=10)
        cancelled_at = time.monotonic()
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        response = sending.answer()
        took = sending.answered_at - cancelled_at
        time.sleep(max(0.0, cancelled_at + 1 - time.monotonic()))
        second_after = broker.depth(upload["queue"])
        time.sleep(1.5)
        assert broker.depth(upload["queue"]) <= second_after, "published into its queue after it stopped"
        after = status(httpx.Client(base_url=url), upload["upload_id"], alpha)
    assert response.status_code == 409, response.text
    assert took < 1.5, f"the publisher answered {took:.2f} s after the cancel"
    body = response.json()
    error = (f"upload {upload['upload_id']} was cancelled while it was being published, after the broker confirmed "
             f"{body['confirmed']} of its {PUBLISHING_ROWS} rows: publishing stopped, and its rows will not be "
             "handled; to have them handled, send the file again as a new upload (with a new Idempotency-Key, if you "
             "send one)")
    assert body == {"upload_id": upload["upload_id"], "rows": PUBLISHING_ROWS, "confirmed": body["confirmed"],
                    "error": error}
    assert body["confirmed"] <= second_after < PUBLISHING_ROWS
    assert (after["state"], after["cancelled"], after["confirmed"]) == ("cancelled", PUBLISHING_ROWS, body["confirmed"])
    assert after["published_at"] is None


def test_publishing_goes_on_while_the_upload_is_paused(made: dict[str, str], broker: Broker, queue_name: str,
                                                       big_csv: Path) -> None:
    alpha = made["alpha"]
    with producer(queue_name) as (url, _pid):
        sending = Background(url, big_csv, alpha)
        upload = publishing(url, alpha)
        paused = httpx.post(f"{url}/uploads/{upload['upload_id']}/pause", headers=bearer(alpha), timeout=10).json()
        assert (paused["state"], paused["published_at"]) == ("paused", None), "paused part-way through publishing"
        response = sending.answer()
        after = status(httpx.Client(base_url=url), upload["upload_id"], alpha)
    assert response.status_code == 200 and response.json()["rows"] == PUBLISHING_ROWS, response.text
    assert broker.depth(upload["queue"]) == PUBLISHING_ROWS, "every row waits in its queue"
    assert (after["state"], after["confirmed"]) == ("paused", PUBLISHING_ROWS) and after["published_at"] is not None


GRACE_SECONDS = 3


def test_the_queues_of_a_finished_and_of_a_cancelled_upload_are_deleted_after_the_grace_and_not_before(
        made: dict[str, str], broker: Broker, queue_name: str, keys_ledger: str, tmp_path: Path) -> None:
    alpha, logs = made["alpha"], [tmp_path / "first.log", tmp_path / "second.log"]
    # Two replicas, sweeping at once.
    settings = {"LOG_LEVEL": "INFO", "UPLOAD_QUEUE_GRACE_SECONDS": str(GRACE_SECONDS)}
    with producer(queue_name, log=logs[0], **settings) as (url, _), producer(queue_name, log=logs[1], **settings):
        api = httpx.Client(base_url=url, timeout=10)
        finished, cancelled, going_on = (uploaded(api, alpha) for _ in range(3))
        queues = [upload_queue(queue_name, upload_id) for upload_id in (finished, cancelled, going_on)]
        began = time.monotonic()
        finish(keys_ledger, finished, rows=2)
        assert control(api, "cancel", cancelled, alpha).status_code == 200
        time.sleep(max(0.0, began + GRACE_SECONDS - 0.5 - time.monotonic()))
        assert all(broker.exists(queue) for queue in queues), "deleted before the grace was over"
        gone_at = wait_for(lambda: not (broker.exists(queues[0]) or broker.exists(queues[1])) and time.monotonic(),
                           what="both queues deleted", timeout=GRACE_SECONDS + 5, interval=0.1)
        assert broker.exists(queues[2]) and broker.depth(queues[2]) == 2, "an upload going on keeps its queue"
        states = [status(api, upload_id, alpha)["state"] for upload_id in (finished, cancelled, going_on)]
    assert gone_at - began >= GRACE_SECONDS
    assert states == ["done", "cancelled", "processing"], "deleting its queue changes no upload's state"
    assert open_ids(keys_ledger, queue_name) & {finished, cancelled, going_on} == {going_on}
    sweeps = [line for log in logs for line in map(json.loads, log.read_text().splitlines())
              if line["message"] == "upload queues deleted"]
    assert sum(line["queues"] for line in sweeps) == 2 and all(line["queues"] > 0 for line in sweeps), sweeps


def test_a_tenant_past_its_open_uploads_gets_429_saying_what_to_do_and_no_other_tenant_is_held_up(
        made: dict[str, str], queue_name: str) -> None:
    crowded, other = create_key(f"crowded-{queue_name}", "upload", "read"), made["beta"]
    with TestClient(create_app(Settings(queue_name=queue_name, max_open_uploads_per_tenant=2))) as client:
        first, _ = uploaded(client, crowded), uploaded(client, crowded)
        refused = send(client, crowded)
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        assert refused.json()["error"].startswith(f"tenant 'crowded-{queue_name}' has 2 uploads open")
        assert "cancel some (DELETE /uploads/{id})" in refused.json()["error"]
        assert send(client, other).status_code == 200, "another tenant's uploads are its own"
        assert control(client, "cancel", first, crowded).status_code == 200
        assert send(client, crowded).status_code == 200, "a cancelled upload is not open"
