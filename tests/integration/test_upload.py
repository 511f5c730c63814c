"""POST /upload against a real RabbitMQ: every row confirmed, or nothing published."""

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pika.adapters.utils import io_services_utils

from kubejob.message import encode, upload_queue
from producer.app import create_app
from producer.settings import Settings
from tests.helpers import free_port, wait_for
from tests.helpers.broker import Broker
from tests.helpers.producer import producer

GOOD = b"id,name,amount\n1,Ada,10.5\n2,\"Grace, Admiral\",7\n3,Zo\xc3\xab,0\n"


@pytest.fixture(autouse=True, params=["fast", "plain"])
def pika_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs on kubejob.pika_fast's paths, then on pika's public calls alone (KUBEJOB_PIKA_FAST=0)."""
    monkeypatch.setenv("KUBEJOB_PIKA_FAST", "1" if request.param == "fast" else "0")
    return request.param


@pytest.fixture
def settings(queue_name: str) -> Settings:
    return Settings(queue_name=queue_name, max_upload_bytes=64 * 1024, max_line_bytes=1024)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def upload(client: TestClient, data: bytes, **kwargs):
    return client.post("/upload", files={"file": ("data.csv", data, "text/csv")}, **kwargs)


def form(*parts: tuple[str, tuple]) -> dict:
    """A multipart request of exactly these parts; a part whose filename is None is a plain field."""
    return {"files": list(parts)}


def csv_file(data: bytes, **fields: str) -> dict:
    return {"files": {"file": ("data.csv", data, "text/csv")}, "data": fields}


SAVE_AS = 'save the file as "CSV UTF-8"'


def test_each_row_becomes_one_persistent_message(client: TestClient, broker: Broker, queue_name: str) -> None:
    response = upload(client, GOOD)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rows"] == 3 and result["delimiter"] == ","
    assert result["queue"] == upload_queue(queue_name, result["upload_id"]), "each upload has a queue of its own"
    assert client.get(result["status_url"]).json()["queue"] == result["queue"]
    messages = broker.drain(result["queue"])
    assert [json.loads(body) for _, body in messages] == [
        {"id": "1", "name": "Ada", "amount": "10.5"},
        {"id": "2", "name": "Grace, Admiral", "amount": "7"},
        {"id": "3", "name": "Zoë", "amount": "0"},
    ]
    assert [p.headers["row"] for p, _ in messages] == [1, 2, 3]
    assert {p.headers["upload_id"] for p, _ in messages} == {result["upload_id"]}
    assert {p.delivery_mode for p, _ in messages} == {2}
    assert len({p.message_id for p, _ in messages}) == 3


def test_a_large_upload_is_published_in_full_in_few_socket_writes(broker: Broker, queue_name: str, pika_path: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 20_000
    data = b"id,value\n" + b"".join(b"%d,v%d\n" % (i, i) for i in range(rows))
    send = io_services_utils._AsyncTransportBase._sigint_safe_send
    sends = []

    def counted(sock: object, chunk: bytes) -> int:
        sends.append(len(chunk))
        return send(sock, chunk)

    monkeypatch.setattr(io_services_utils._AsyncTransportBase, "_sigint_safe_send", staticmethod(counted))
    with TestClient(create_app(Settings(queue_name=queue_name, publish_window=500))) as client:
        response = upload(client, data)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == rows
    assert broker.backlog(queue_name) == rows
    if pika_path == "fast":
        assert len(sends) < rows / 10, f"{len(sends)} sends for {rows} rows"
    else:  # pika alone sends each of a message's three frames on its own (kubejob.pika_fast.join_writes)
        assert len(sends) >= rows, f"{len(sends)} sends for {rows} rows"


@pytest.mark.parametrize(
    ("request_", "status", "error", "line"),
    [
        pytest.param(csv_file(b""), 400, "the file is empty", None, id="empty"),
        pytest.param(csv_file(b" \n,,\n"), 400, "the file is empty", None, id="only-empty-rows"),
        pytest.param(csv_file(b"id,name\n"), 400, "the file has a header but no data rows", 2, id="header-only"),
        pytest.param(csv_file(b"id,id\n1,2\n"), 400, "the header repeats column names: id; give each column a name of "
                     "its own", 1, id="repeated-name"),
        pytest.param(csv_file(b"id,,x\n1,2,3\n"), 400, "column 2 of the header has no name", 1, id="unnamed-column"),
        pytest.param(csv_file(b"a,b,c,,,\n1,2,3,,x,\n"), 400, "column 5 has a value but no name in the header", 2,
                     id="value-in-unnamed-column"),
        pytest.param(csv_file(b"id,name\n1,a\n2,b,c\n"), 400, "expected 2 fields, found 3", 3, id="wide-row"),
        pytest.param(csv_file(b"id;name\n1;a\n2;Caf\xe9\n"), 400, 'line 3, column 2 ("name"): the text is not UTF-8',
                     3, id="cp1252"),
        pytest.param(csv_file(b"id;name\n1;a\n2;Caf\xe9\n"), 400, SAVE_AS, 3, id="cp1252-says-what-to-do"),
        pytest.param(csv_file("id,name\n1,\ud800\n".encode("utf-16", "surrogatepass")), 400,
                     f'line 2, column 2 ("name"): the text is not valid UTF-16; {SAVE_AS}', 2, id="bad-utf16"),
        pytest.param(csv_file("id,name\n1,a\n".encode("utf-16-le")), 400, "NUL byte", 1, id="utf16-without-bom"),
        pytest.param(csv_file(b"id,name\n1,\"open\n"), 400, "a quote opened on this line is not closed", 2,
                     id="unterminated-quote"),
        pytest.param(csv_file(b"id,name\n1,\"open\n2,b\n3,c\n"), 400, "a quote opened on this line is not closed", 2,
                     id="unterminated-quote-mid-file"),
        pytest.param(csv_file(b"id,name\r1,a\r2,\"open\r3,c\r"), 400, "a quote opened on this line is not closed", 3,
                     id="unterminated-quote-cr"),
        pytest.param(csv_file(b"id,name\n1,\"open\n" + b"more\n" * 300), 400,
                     "a quoted field opened on this line is longer than the limit of 1024 bytes", 2,
                     id="unterminated-quote-past-the-limit"),
        pytest.param(csv_file(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), 400, "line 1, column 1: the text is not UTF-8",
                     1, id="png"),
        pytest.param(csv_file(b"id,name\n1," + b"x" * 5000 + b"\n"), 400, "line is longer than the limit of 1024 bytes",
                     2, id="long-line"),
        pytest.param(csv_file(b"id,name\n" + b"1,abcdefghij\n" * 7000), 413,
                     "upload is larger than the limit of 65536 bytes", None, id="too-large"),
        pytest.param(csv_file(GOOD, delimiter=":"), 400, 'delimiter must be one of "," ";" "\\t" "|"', None,
                     id="unknown-delimiter"),
        pytest.param(form(("file", ("a.csv", GOOD, "text/csv")), ("file", ("b.csv", GOOD, "text/csv"))), 422,
                     "the form has 2 `file` fields; send exactly one file", None, id="two-files"),
        pytest.param(form(("file", (None, GOOD))), 422,
                     "the `file` field must be a file upload, e.g. curl -F file=@data.csv", None, id="file-not-a-file"),
    ],
)
def test_bad_files_are_rejected_and_nothing_is_published(
    client: TestClient, broker: Broker, queue_name: str, request_: dict, status: int, error: str, line: int | None
) -> None:
    assert upload(client, GOOD).status_code == 200
    response = client.post("/upload", **request_)
    assert response.status_code == status, response.text
    assert error in response.json()["error"]
    assert response.json().get("line") == line
    assert broker.backlog(queue_name) == 3
    assert client.get("/healthz").status_code == 200


def test_a_request_without_the_file_field_is_rejected(client: TestClient) -> None:
    response = client.post("/upload", files={"upload": ("data.csv", GOOD, "text/csv")})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request: body.file: Field required"


def test_broker_unreachable_means_503_not_success(queue_name: str) -> None:
    settings = Settings(queue_name=queue_name, rabbitmq_port=1, confirm_timeout_seconds=3)
    with TestClient(create_app(settings)) as client:
        response = upload(client, GOOD)
        assert response.status_code == 503
        body = response.json()
        assert "cannot connect to RabbitMQ" in body["error"] and "Idempotency-Key" in body["error"]
        assert (body["rows"], body["confirmed"]) == (3, 0)
        status = client.get(f"/uploads/{body['upload_id']}").json()
        assert (status["state"], status["confirmed"]) == ("interrupted", 0), "no publisher holds it any more"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_upload_token_is_required_when_set(broker: Broker, queue_name: str) -> None:
    settings = Settings(queue_name=queue_name, upload_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert upload(client, GOOD).status_code == 401
        assert upload(client, GOOD, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert broker.upload_queues(queue_name) == []
        assert upload(client, GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert broker.backlog(queue_name) == 3


def test_readyz_reports_a_reachable_broker_from_a_connection_it_keeps(client: TestClient) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200, what="/readyz to say ready", timeout=10, interval=0.1)
    started = time.perf_counter()
    assert client.get("/readyz").json() == {"status": "ok"}
    assert time.perf_counter() - started < 0.1


def test_readyz_says_not_ready_at_once_when_the_broker_is_unreachable(queue_name: str) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name, rabbitmq_port=free_port()))) as client:
        started = time.perf_counter()
        response = client.get("/readyz")
        assert time.perf_counter() - started < 0.1
        assert response.status_code == 503 and "RabbitMQ" in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "content_type"),
    [
        ({"json": {"id": 1}}, "application/json"),
        ({"content": GOOD, "headers": {"content-type": "text/csv"}}, "text/csv"),
        ({}, "no content type"),
    ],
)
def test_a_body_that_is_not_a_form_gets_415(
    client: TestClient, broker: Broker, queue_name: str, kwargs: dict, content_type: str
) -> None:
    response = client.post("/upload", **kwargs)
    assert response.status_code == 415
    assert content_type in response.json()["error"]
    assert broker.upload_queues(queue_name) == []


JOSE = {"name": "Jose", "city": "Paris", "amount": "150"}
ANA = {"name": "Ana", "city": "São Paulo", "amount": "7,5"}


@pytest.mark.parametrize(
    ("request_", "delimiter", "rows"),
    [
        pytest.param(csv_file(b"\xef\xbb\xbfid,name\n1,a\n"), ",", [{"id": "1", "name": "a"}], id="bom"),
        pytest.param(csv_file(b"id,name\r\n1,a\r\n2,b\r\n"), ",", [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}],
                     id="crlf"),
        pytest.param(csv_file(b'id,note\n1,"two\nlines, and ""quotes"""\n'), ",",
                     [{"id": "1", "note": 'two\nlines, and "quotes"'}], id="quoted-newline"),
        pytest.param(csv_file(b"id,name\n\n1,a\n\n"), ",", [{"id": "1", "name": "a"}], id="blank-lines"),
        pytest.param(csv_file(b"name;city;amount\r\nJose;Paris;150\r\nAna;S\xc3\xa3o Paulo;\"7,5\"\r\n"), ";",
                     [JOSE, ANA], id="semicolon"),
        pytest.param(csv_file(b"name\tcity\tamount\nJose\tParis\t150\nAna\tS\xc3\xa3o Paulo\t7,5\n"), "\t",
                     [JOSE, ANA], id="tab"),
        pytest.param(csv_file(b'name|city|amount\nJose|Paris|150\nAna|"S\xc3\xa3o Paulo"|7,5\n'), "|", [JOSE, ANA],
                     id="pipe"),
        pytest.param(csv_file(b"name;city;amount\nJose;Paris;150\n", delimiter="semicolon"), ";", [JOSE],
                     id="delimiter-by-name"),
        pytest.param(csv_file(b"name;city;amount\nJose;Paris;150\n", delimiter=";"), ";", [JOSE],
                     id="delimiter-by-character"),
        pytest.param(csv_file(b"name;city\nJose;Paris\n", delimiter=","), ",", [{"name;city": "Jose;Paris"}],
                     id="delimiter-overrides-detection"),
        pytest.param(csv_file("name\tcity\tamount\r\nJose\tParis\t150\r\nAna\tSão Paulo\t7,5\r\n".encode("utf-16")),
                     "\t", [JOSE, ANA], id="utf16-unicode-text"),
        pytest.param(csv_file(b"\xfe\xff" + "name,city,amount\nJose,Paris,150\n".encode("utf-16-be")), ",", [JOSE],
                     id="utf16-be"),
        pytest.param(csv_file(b"name,city,amount,,,\r\nJose,Paris,150,,,\r\n,,,,,\r\nAna,S\xc3\xa3o Paulo,\"7,5\"\r\n"),
                     ",", [JOSE, ANA], id="excel-trailing-empty-columns"),
        pytest.param(csv_file(b"name,city,amount\n,,\nJose,Paris,150\n   \n,,\n"), ",", [JOSE], id="empty-rows"),
        pytest.param(csv_file(b"name,city,amount\rJose,Paris,150\rAna,S\xc3\xa3o Paulo,\"7,5\"\r"), ",", [JOSE, ANA],
                     id="cr-only"),
        pytest.param(csv_file(b"id,value\r" + b"".join(b"%d,v\r" % i for i in range(300))), ",",
                     [{"id": str(i), "value": "v"} for i in range(300)], id="cr-only-past-the-line-limit"),
    ],
)
def test_valid_variants_upload_exactly_their_rows(
    client: TestClient, broker: Broker, queue_name: str, request_: dict, delimiter: str, rows: list
) -> None:
    response = client.post("/upload", **request_)
    assert response.status_code == 200, response.text
    assert response.json()["delimiter"] == delimiter and response.json()["rows"] == len(rows)
    assert [json.loads(body) for _, body in broker.drain(response.json()["queue"])] == rows


def test_a_field_longer_than_the_csv_modules_default_limit_is_published(broker: Broker, queue_name: str) -> None:
    blob = "x" * 200_000  # csv's own limit is 131,072 characters; MAX_LINE_BYTES is what counts
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        response = upload(client, f"id,blob\n1,{blob}\n".encode())
    assert response.status_code == 200, response.text
    assert [json.loads(body) for _, body in broker.drain(response.json()["queue"])] == [{"id": "1", "blob": blob}]


def test_a_50_mb_single_line_is_refused_with_the_default_limits(broker: Broker, queue_name: str) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        response = upload(client, b"id,blob\n1," + b"x" * 50 * 1024 * 1024 + b"\n")
        assert response.status_code == 400
        assert response.json() == {"error": "line is longer than the limit of 1048576 bytes", "line": 2}
        assert client.get("/healthz").status_code == 200
    assert broker.upload_queues(queue_name) == []


@pytest.mark.parametrize("codec", ["utf-8", "utf-16"])
def test_a_field_of_a_million_emoji_is_refused_in_bytes_with_the_default_limits(broker: Broker, queue_name: str,
                                                                                codec: str) -> None:
    field = ("\U0001f600" * 999 + "\n") * 1001  # 1,000,000 characters, 4.0 MB of UTF-8; each line under 1 MiB
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        response = upload(client, f'id,blob\n1,a\n2,"{field}"\n'.encode(codec))
        assert response.status_code == 400
        assert response.json() == {"error": "a quoted field opened on this line is longer than the limit of 1048576 "
                                            "bytes; is its closing quote missing?", "line": 3}
        assert client.get("/healthz").status_code == 200
    assert broker.upload_queues(queue_name) == []


def test_a_row_over_max_message_bytes_is_refused_before_anything_is_recorded(broker: Broker, queue_name: str) -> None:
    big = {"id": "2", "text": "x" * 600 + "\x01" * 100}  # 703 bytes in the file, 1220 as JSON (\u0001 is 6)
    size = len(encode(big, upload_id="u", row_number=2, line=3)[0])
    data = f"id,text\n1,short\n2,{big['text']}\n3,short\n".encode()
    with producer(queue_name, MAX_MESSAGE_BYTES="1000") as (url, _pid):
        response = httpx.post(f"{url}/upload", files={"file": ("rows.csv", data, "text/csv")}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json() == {"line": 3, "error": f"row is {size} bytes as a message, more than MAX_MESSAGE_BYTES "
                                   "(1000); split the row, or raise MAX_MESSAGE_BYTES together with the worker Job's "
                                   "memory limit (a worker holds WORKER_PREFETCH such rows) and the broker's "
                                   "max_message_size"}
        assert broker.upload_queues(queue_name) == []
        good = httpx.post(f"{url}/upload", files={"file": ("rows.csv", GOOD, "text/csv")}, timeout=30)
        assert good.status_code == 200, good.text
        recorded = httpx.get(f"{url}/uploads", timeout=30).json()["uploads"]
    ours = [u["upload_id"] for u in recorded if u["queue"] == upload_queue(queue_name, u["upload_id"])]
    assert ours == [good.json()["upload_id"]]
    assert broker.backlog(queue_name) == 3
