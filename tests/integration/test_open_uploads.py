"""The scaler's read of the open uploads against the real PostgreSQL, and while it fails.

Each fault sits in a TCP proxy before the shared PostgreSQL, which is never stopped.
"""

import os
import time
from urllib.parse import urlsplit

import pytest

from kubejob.errors import LedgerUnavailable
from scaler.uploads import OpenUploads
from tests.helpers import free_port
from tests.helpers.backlog import backlog, pause
from tests.helpers.broker import Broker, rows
from tests.helpers.ledger import fresh_database
from tests.helpers.tcp_proxy import TcpProxy

TIMEOUT_S = 2.0  # libpq's shortest connect_timeout


@pytest.fixture
def ledger_proxy():
    proxy = TcpProxy(urlsplit(os.environ["DATABASE_URL"]).port or 5432)
    yield proxy
    proxy.close()


def test_open_uploads_say_which_are_served(broker: Broker, queue_name: str) -> None:
    served, paused = (broker.publish_rows(queue_name, rows(2)) for _ in range(2))
    elsewhere = broker.publish_rows(f"{queue_name}-other", rows(2))
    pause(paused)
    reader = OpenUploads(os.environ["DATABASE_URL"], queue=queue_name, timeout_s=TIMEOUT_S)
    found = {upload.id: upload for upload in reader.read()}
    assert (found[served].served, found[paused].served, found[paused].paused) == (True, False, True)
    assert elsewhere not in found, "another QUEUE_NAME's upload in the same ledger is another scaler's"
    broker.delete_queue(f"{queue_name}-other")


def test_a_ledger_without_its_schema_yet_has_no_upload() -> None:
    with fresh_database() as url:  # as before the producer or a worker first started
        assert OpenUploads(url, queue="rows", timeout_s=TIMEOUT_S).read() == []


def test_an_unreachable_ledger_is_an_error_that_says_so() -> None:
    url = f"postgresql://kubejob:kubejob@127.0.0.1:{free_port()}/kubejob"
    with pytest.raises(LedgerUnavailable, match=r"^ledger: OperationalError: connection failed"):
        OpenUploads(url, queue="rows", timeout_s=TIMEOUT_S).read()


@pytest.mark.parametrize(("how", "first", "then"), [
    ("refuse", "OperationalError", "Connection refused"),
    ("blackhole", "OperationalError", "connection timeout expired"),
    ("freeze", "no answer within 2.0s", "connection timeout expired"),
])
def test_a_ledger_cut_off_is_an_error_within_the_timeout_and_a_read_after_it_is_back_reconnects(
    broker: Broker, queue_name: str, ledger_proxy: TcpProxy, how: str, first: str, then: str
) -> None:
    """"freeze" silences the connection already open; "blackhole" answers no new one."""
    upload = broker.publish_rows(queue_name, rows(3))
    reader = OpenUploads(ledger_proxy.through(os.environ["DATABASE_URL"]), queue=queue_name, timeout_s=TIMEOUT_S)
    assert upload in {u.id for u in reader.read()}
    ledger_proxy.cut(how)
    for expected in (first, then):  # the connection it had, then a new one
        began = time.monotonic()
        with pytest.raises(LedgerUnavailable, match=f"^ledger: .*{expected}"):
            reader.read()
        assert time.monotonic() - began < TIMEOUT_S + 1.0
    ledger_proxy.restore()
    assert upload in {u.id for u in reader.read()}
    reader.close()


def test_the_backlog_with_the_ledger_down_is_a_reading_error_not_zero(
    broker: Broker, queue_name: str, ledger_proxy: TcpProxy
) -> None:
    broker.publish_rows(queue_name, rows(40))
    reader = backlog(broker, queue_name, database_url=ledger_proxy.through(os.environ["DATABASE_URL"]))
    assert reader.read().messages == 40
    ledger_proxy.cut("refuse")
    with pytest.raises(LedgerUnavailable, match=r"^ledger: "):
        reader.read()
    ledger_proxy.restore()
    assert reader.read().messages == 40
    reader.close()
