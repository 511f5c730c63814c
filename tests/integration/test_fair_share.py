"""The fair share between tenants, and pause and cancel, as a real worker on a real RabbitMQ and PostgreSQL does them.

Rows are named `<upload>-<n>`, and the `timed` handler notes when each one starts, so that a
test can say which upload's rows started when. Pause and cancel go through the producer's routes.
"""

import collections
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.keys import keys
from tests.helpers.uploads import named_rows, small_behind_large
from tests.helpers.worker import handled, start_worker, stop


def starts(started: Path) -> list[tuple[float, str]]:
    """(when, upload name) of each row started so far, in order."""
    lines = started.read_text().split("\n") if started.exists() else []
    return [(float(at), row.rsplit("-", 1)[0]) for at, row in (line.split() for line in lines if line)]


def test_a_small_upload_behind_a_large_one_is_done_in_about_its_own_time(broker: Broker, queue_name: str,
                                                                         tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    worker = start_worker(queue_name, record, "timed", SLOW_SECONDS="0.001", STARTED_FILE=str(started),
                          WORKER_IDLE_SECONDS="120")
    try:
        alone, behind, _, still_queued = small_behind_large(broker, queue_name)
    finally:
        stop(worker)
    assert still_queued > 100_000
    assert behind <= 3 * alone, f"100 rows took {behind:.2f} s behind 200,000 of another tenant, {alone:.2f} s alone"


def test_three_tenants_each_get_a_third_of_the_rows_while_all_have_work(broker: Broker, queue_name: str,
                                                                        tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    for tenant in "ABC":
        broker.publish_rows(queue_name, named_rows(tenant, 3000), confirm=False, tenant=tenant)
    wait_for(lambda: broker.backlog(queue_name) == 9000, what="the rows to be queued")
    worker = start_worker(queue_name, record, "timed", SLOW_SECONDS="0", STARTED_FILE=str(started))
    assert worker.wait(timeout=120) == 0
    order = [name for _, name in starts(started)]
    first_to_finish = min(max(i for i, name in enumerate(order) if name == tenant) for tenant in "ABC")
    shares = collections.Counter(order[:first_to_finish + 1])
    for tenant in "ABC":
        assert abs(shares[tenant] / (first_to_finish + 1) - 1 / 3) <= 0.2 / 3, shares
    assert sum(handled(record).values()) == 9000


def post_rows(client: TestClient, name: str, count: int) -> dict:
    """Upload `count` rows named `<name>-<n>` through the producer; its answer."""
    body = "id\n" + "".join(f"{name}-{n}\n" for n in range(count))
    response = client.post("/upload", files={"file": (f"{name}.csv", body.encode(), "text/csv")})
    assert response.status_code == 200, response.text
    return response.json()


def answered(response: httpx.Response) -> float:
    """When the producer's answer was in, for a test to time what happens after it."""
    assert response.status_code == 200, response.text
    return time.time()


def test_no_row_of_an_upload_cancelled_by_delete_starts_a_second_after_and_the_others_are_untouched(
        client: TestClient, queue_name: str, tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    doomed, kept = post_rows(client, "doomed", 3000), post_rows(client, "kept", 3000)
    worker = start_worker(queue_name, record, "timed", SLOW_SECONDS="0.002", STARTED_FILE=str(started))
    wait_for(lambda: sum(name == "doomed" for _, name in starts(started)) >= 200, what="the doomed upload to start",
             interval=0.05)
    cancelled_at = answered(client.delete(f"/uploads/{doomed['upload_id']}"))
    assert worker.wait(timeout=120) == 0
    late = [at - cancelled_at for at, name in starts(started) if name == "doomed" and at > cancelled_at + 1]
    assert not late, f"{len(late)} rows of the cancelled upload started after it, the last {max(late):.2f} s after"
    status = client.get(f"/uploads/{doomed['upload_id']}").json()
    assert status["state"] == "cancelled" and 0 < status["cancelled"] < 3000
    assert status["cancelled"] + status["done"] + status["failed"] == 3000
    counts = handled(record)
    assert sum(n for row, n in counts.items() if row.startswith("doomed-")) == status["done"]
    assert client.get(f"/uploads/{kept['upload_id']}").json()["done"] == 3000
    assert sum(n for row, n in counts.items() if row.startswith("kept-")) == 3000


def test_a_paused_upload_keeps_its_rows_the_worker_exits_and_after_resume_it_is_done(
        client: TestClient, broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    upload = post_rows(client, "paused", 3000)
    status_url = f"/uploads/{upload['upload_id']}"
    worker = start_worker(queue_name, record, "timed", SLOW_SECONDS="0.002", STARTED_FILE=str(started),
                          WORKER_IDLE_SECONDS="2")
    wait_for(lambda: len(starts(started)) >= 200, what="the upload to start", interval=0.05)
    paused_at = answered(client.post(f"{status_url}/pause"))
    assert worker.wait(timeout=30) == 0, "a worker with nothing but a paused upload left exits as when idle"
    late = [at - paused_at for at, _ in starts(started) if at > paused_at + 1]
    assert not late, f"{len(late)} rows started after the pause, the last {max(late):.2f} s after"
    status = client.get(status_url).json()
    left = 3000 - status["done"]
    assert status["state"] == "paused" and left > 0
    assert broker.depth(upload["queue"]) == left, "its rows stay queued"

    assert client.post(f"{status_url}/resume").json()["state"] == "processing"
    resumed = start_worker(queue_name, record, "timed", SLOW_SECONDS="0.002", STARTED_FILE=str(started))
    assert resumed.wait(timeout=60) == 0
    assert client.get(status_url).json()["state"] == "done"
    assert sorted(handled(record).values()) == [1] * 3000


def test_a_tenant_weighed_2_gets_two_thirds_of_the_rows_while_both_have_work(broker: Broker, queue_name: str,
                                                                           tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    heavy, light = f"heavy-{queue_name}", f"light-{queue_name}"
    keys("weight", "--tenant", heavy, "2")
    broker.publish_rows(queue_name, named_rows("heavy", 4000), confirm=False, tenant=heavy)
    broker.publish_rows(queue_name, named_rows("light", 4000), confirm=False, tenant=light)
    wait_for(lambda: broker.backlog(queue_name) == 8000, what="the rows to be queued")
    worker = start_worker(queue_name, record, "timed", SLOW_SECONDS="0", STARTED_FILE=str(started))
    assert worker.wait(timeout=120) == 0
    order = [name for _, name in starts(started)]
    first_to_finish = min(max(i for i, name in enumerate(order) if name == tenant) for tenant in ("heavy", "light"))
    shares = collections.Counter(order[:first_to_finish + 1])
    assert abs(shares["heavy"] / (first_to_finish + 1) - 2 / 3) <= 0.2 * 2 / 3, shares
    assert sum(handled(record).values()) == 8000


def test_a_weight_that_is_not_a_whole_number_from_1_to_1000_is_refused_saying_so() -> None:
    refused = keys("weight", "--tenant", "acme", "0", check=False)
    assert refused.returncode == 2 and "a weight is a whole number from 1 to 1000" in refused.stderr
