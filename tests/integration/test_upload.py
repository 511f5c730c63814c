"""POST /upload against a real RabbitMQ: every row confirmed, or nothing published."""

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producer.app import create_app
from producer.settings import Settings
from tests.helpers.broker import Broker

GOOD = b"id,name,amount\n1,Ada,10.5\n2,\"Grace, Admiral\",7\n3,Zo\xc3\xab,0\n"


@pytest.fixture
def settings(queue_name: str) -> Settings:
    return Settings(queue_name=queue_name, max_upload_bytes=64 * 1024, max_line_bytes=1024)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def upload(client: TestClient, data: bytes, **kwargs):
    return client.post("/upload", files={"file": ("data.csv", data, "text/csv")}, **kwargs)


def test_each_row_becomes_one_persistent_message(client: TestClient, broker: Broker, queue_name: str) -> None:
    response = upload(client, GOOD)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rows"] == 3 and result["queue"] == queue_name
    messages = broker.drain(queue_name)
    assert [json.loads(body) for _, body in messages] == [
        {"id": "1", "name": "Ada", "amount": "10.5"},
        {"id": "2", "name": "Grace, Admiral", "amount": "7"},
        {"id": "3", "name": "Zoë", "amount": "0"},
    ]
    assert [p.headers["row"] for p, _ in messages] == [1, 2, 3]
    assert {p.headers["upload_id"] for p, _ in messages} == {result["upload_id"]}
    assert {p.delivery_mode for p, _ in messages} == {2}
    assert len({p.message_id for p, _ in messages}) == 3


def test_a_large_upload_is_published_in_full(broker: Broker, queue_name: str) -> None:
    rows = 20_000
    data = b"id,value\n" + b"".join(b"%d,v%d\n" % (i, i) for i in range(rows))
    with TestClient(create_app(Settings(queue_name=queue_name, publish_window=500))) as client:
        response = upload(client, data)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == rows
    assert broker.depth(queue_name) == rows


@pytest.mark.parametrize(
    ("data", "status", "error", "line"),
    [
        (b"", 400, "the file is empty", None),
        (b"id,name\n", 400, "the file has a header but no data rows", 2),
        (b"id,id\n1,2\n", 400, "the header repeats column names: id", 1),
        (b"id,,x\n1,2,3\n", 400, "the header has an empty column name", 1),
        (b"id,name\n1,a\n2,b,c\n", 400, "expected 2 fields, found 3", 3),
        (b"id,name\n1,a\n2,\xe9t\xe9\n", 400, "text is not valid UTF-8 (byte 2 of the line)", 3),
        (b"id,name\n1,\"open\n", 400, "malformed CSV: unexpected end of data", 2),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 400, "text is not valid UTF-8 (byte 0 of the line)", 1),
        (b"id,name\n1," + b"x" * 5000 + b"\n", 400, "line is longer than the limit of 1024 bytes", 2),
        (b"id,name\n" + b"1,abcdefghij\n" * 7000, 413, "upload is larger than the limit of 65536 bytes", None),
    ],
)
def test_bad_files_are_rejected_and_nothing_is_published(
    client: TestClient, broker: Broker, queue_name: str, data: bytes, status: int, error: str, line: int | None
) -> None:
    assert upload(client, GOOD).status_code == 200
    response = upload(client, data)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json().get("line") == line
    assert broker.depth(queue_name) == 3
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
        assert "RabbitMQ unavailable" in response.json()["error"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_upload_token_is_required_when_set(broker: Broker, queue_name: str) -> None:
    settings = Settings(queue_name=queue_name, upload_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert upload(client, GOOD).status_code == 401
        assert upload(client, GOOD, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert not broker.exists(queue_name)
        assert upload(client, GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert broker.depth(queue_name) == 3


def test_readyz_reports_a_reachable_broker(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ok"}


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
    assert not broker.exists(queue_name)


@pytest.mark.parametrize(
    ("data", "rows"),
    [
        (b"\xef\xbb\xbfid,name\n1,a\n", [{"id": "1", "name": "a"}]),
        (b"id,name\r\n1,a\r\n2,b\r\n", [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}]),
        (b'id,note\n1,"two\nlines, and ""quotes"""\n', [{"id": "1", "note": 'two\nlines, and "quotes"'}]),
        (b"id,name\n\n1,a\n\n", [{"id": "1", "name": "a"}]),
    ],
    ids=["bom", "crlf", "quoted-newline", "blank-lines"],
)
def test_valid_variants_upload_exactly_their_rows(
    client: TestClient, broker: Broker, queue_name: str, data: bytes, rows: list
) -> None:
    response = upload(client, data)
    assert response.status_code == 200, response.text
    assert [json.loads(body) for _, body in broker.drain(queue_name)] == rows


def test_a_50_mb_single_line_is_refused_with_the_default_limits(broker: Broker, queue_name: str) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        response = upload(client, b"id,blob\n1," + b"x" * 50 * 1024 * 1024 + b"\n")
        assert response.status_code == 400
        assert response.json() == {"error": "line is longer than the limit of 1048576 bytes", "line": 2}
        assert client.get("/healthz").status_code == 200
    assert not broker.exists(queue_name)
