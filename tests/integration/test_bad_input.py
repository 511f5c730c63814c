"""Bad CSV input against a real producer: a clear 400 naming the line, the producer still up, no other row lost."""

import httpx
import pytest

from kubejob.message import encode
from tests.helpers.broker import Broker
from tests.helpers.producer import producer
from tests.helpers.rss import high_water

GOOD = b"id,name\n1,a\n2,b\n3,c\n"
MB = 1024**2
LIMITS = {"MAX_LINE_BYTES": "1024", "MAX_RECORD_BYTES": "4096", "MAX_COLUMNS": "10", "MAX_COLUMN_NAME_BYTES": "32",
          "MAX_MESSAGE_BYTES": "4096"}


def post(url: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/upload", files={"file": ("rows.csv", data, "text/csv")}, timeout=120)


def quoted_record(fields: int, size: int) -> bytes:
    """A record of `fields` quoted fields of `size` bytes, each over two lines."""
    half = b"y" * (size // 2 - 1)
    return b",".join(b'"' + half + b"\n" + half + b'"' for _ in range(fields)) + b"\n"


CONTROL = "\x01" * 1000  # 1,000 bytes in the file, 6,000 as JSON (\u0001)
CASES = [
    pytest.param(b"a,b,c,d,e,f\n1,2,3,4,5,6\n" + quoted_record(6, 800), 3,
                 "the record that starts on this line (a row, with the line breaks inside its quoted fields) is longer "
                 "than MAX_RECORD_BYTES (4096 bytes); is a closing quote missing? If not, split the row, or raise "
                 "MAX_RECORD_BYTES", id="record"),
    pytest.param(",".join(f"c{n}" for n in range(11)).encode() + b"\n1\n", 1,
                 "the header has 11 columns, more than MAX_COLUMNS (10); split the columns over several files, or "
                 "raise MAX_COLUMNS", id="columns"),
    pytest.param(b"id," + b"n" * 33 + b"\n1,2\n", 1,
                 "the name of column 2 is longer than MAX_COLUMN_NAME_BYTES (32 bytes); shorten it, or raise "
                 "MAX_COLUMN_NAME_BYTES", id="column-name"),
    pytest.param(b"id,_error\n1,2\n", 1,
                 "the header names _error, which the failed-rows download (GET /uploads/{id}/failed) adds to every "
                 "row; rename the column", id="reserved-name"),
    pytest.param(b"id,name,id\n1,2,3\n", 1, "the header repeats column names: id; give each column a name of its own",
                 id="repeated-name"),
    pytest.param(f"id,text\n1,a\n2,{CONTROL}\n".encode(), 3,
                 f"row is {len(encode({'id': '2', 'text': CONTROL}, upload_id='', row_number=0, line=0)[0])} bytes "
                 "as a message, more than MAX_MESSAGE_BYTES (4096); split the row, or raise MAX_MESSAGE_BYTES together "
                 "with the worker Job's memory limit (a worker holds WORKER_PREFETCH such rows) and the broker's "
                 "max_message_size", id="message-body"),
]


def queued(broker: Broker, queue: str) -> set[str]:
    """The ids of the messages in every upload's queue of `queue`."""
    return {properties.message_id for name in broker.upload_queues(queue) for properties, _ in broker.drain(name)}


@pytest.mark.parametrize(("data", "line", "error"), CASES)
def test_bad_input_is_a_400_naming_its_line_and_no_other_upload_loses_a_row(
        broker: Broker, queue_name: str, data: bytes, line: int, error: str) -> None:
    with producer(queue_name, **LIMITS) as (url, _pid):
        before = post(url, GOOD)
        assert before.status_code == 200, before.text
        refused = post(url, data)
        assert (refused.status_code, refused.json()) == (400, {"error": error, "line": line})
        after = post(url, GOOD)
        assert after.status_code == 200, after.text
    assert queued(broker, queue_name) == {f"{result.json()['upload_id']}:{row}" for result in (before, after)
                                          for row in (1, 2, 3)}


def test_a_64_mb_record_costs_the_producer_a_bounded_few_mb_with_the_default_limits(broker: Broker,
                                                                                      queue_name: str) -> None:
    header = ",".join(f"c{n}" for n in range(128)).encode() + b"\n"
    huge = header + quoted_record(128, 512 * 1024)  # lines and fields under MAX_LINE_BYTES; 64 MiB in one record
    with producer(queue_name) as (url, pid):
        before = post(url, GOOD)
        assert before.status_code == 200, before.text
        baseline = high_water(pid)
        refused = post(url, huge)
        peak = high_water(pid)
        assert (refused.status_code, refused.json()["line"]) == (400, 2), refused.text
        assert "MAX_RECORD_BYTES (4194304 bytes)" in refused.json()["error"]
        assert post(url, GOOD).status_code == 200
    assert baseline is not None and peak is not None
    # Measured 7.6 MiB; 195 MiB before MAX_RECORD_BYTES, which is 4 MiB.
    assert peak - baseline < 4 * 4 * MB, (peak - baseline) / MB
    assert len(queued(broker, queue_name)) == 6


def test_a_1_mib_line_of_control_characters_is_refused_as_a_message_with_the_default_limits(
        broker: Broker, queue_name: str) -> None:
    line = "\x01" * (MB - 100)  # under MAX_LINE_BYTES; six times that as JSON, more than MAX_MESSAGE_BYTES
    with producer(queue_name) as (url, _pid):
        refused = post(url, f"id,text\n1,{line}\n".encode())
        assert (refused.status_code, refused.json()["line"]) == (400, 2), refused.text
        assert "more than MAX_MESSAGE_BYTES (1048576)" in refused.json()["error"]
        assert post(url, GOOD).status_code == 200
    assert len(queued(broker, queue_name)) == 3
