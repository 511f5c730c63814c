"""Generated inputs against the real producer and RabbitMQ: property and schema tests."""

import csv
import io
import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producer.app import create_app
from producer.csv_stream import DELIMITERS
from producer.settings import Settings
from tests.helpers.broker import Broker

# Any text a CSV can hold: no NUL (we reject it as binary) and no lone surrogates (not UTF-8).
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
# Header names are trimmed and a leading BOM is the file's, so generate them that way.
NAME = TEXT.map(str.strip).filter(lambda name: name and not name.startswith("\ufeff"))
# A name the header line can be split by without ambiguity: no delimiter, quote or line break.
PLAIN_NAME = NAME.filter(lambda name: not set(name) & {*DELIMITERS, '"', "\r", "\n"})


@st.composite
def tables(
    draw: st.DrawFn, names: st.SearchStrategy[str] = NAME, min_columns: int = 1
) -> tuple[list[str], list[list[str]]]:
    header = draw(st.lists(names, min_size=min_columns, max_size=5, unique=True))
    row = st.lists(TEXT, min_size=len(header), max_size=len(header))
    # At least one row with something in it: rows of empty fields are skipped like blank lines.
    return header, draw(st.lists(row, min_size=1, max_size=15).filter(lambda rows: any(map(published, rows))))


def published(row: list[str]) -> bool:
    return any(field.strip() for field in row)


def upload_table(broker: Broker, queue_name: str, data: bytes, **fields: str) -> tuple[str, list[dict]]:
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        response = client.post("/upload", files={"file": ("t.csv", data, "text/csv")}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()["delimiter"], [json.loads(body) for _, body in broker.drain(response.json()["queue"])]


def written(header: list[str], rows: list[list[str]], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter).writerows([header, *rows])
    return out.getvalue().encode(encoding)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables(), delimiter=st.sampled_from(list(DELIMITERS)), by_name=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_any_table_written_by_the_csv_module_uploads_as_exactly_those_rows(
    broker: Broker, queue_name: str, table: tuple[list[str], list[list[str]]], delimiter: str, by_name: bool,
    encoding: str
) -> None:
    header, rows = table
    given_as = DELIMITERS[delimiter] if by_name else delimiter
    used, bodies = upload_table(broker, queue_name, written(header, rows, delimiter, encoding), delimiter=given_as)
    assert used == delimiter
    assert bodies == [dict(zip(header, row, strict=False)) for row in rows if published(row)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables(PLAIN_NAME, min_columns=2), delimiter=st.sampled_from(list(DELIMITERS)))
def test_the_delimiter_of_a_table_with_two_or_more_columns_is_detected(
    broker: Broker, queue_name: str, table: tuple[list[str], list[list[str]]], delimiter: str
) -> None:
    header, rows = table
    used, bodies = upload_table(broker, queue_name, written(header, rows, delimiter, "utf-8"))
    assert used == delimiter
    assert bodies == [dict(zip(header, row, strict=False)) for row in rows if published(row)]


@pytest.fixture(scope="module")
def api_schema(broker: Broker):
    # With a token, as the manifests deploy it; the checks also send requests without it.
    settings = Settings(queue_name="test-schemathesis", max_upload_bytes=256 * 1024, upload_token=TOKEN)
    app = create_app(settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    broker.delete_queue("test-schemathesis")
    broker.delete_queue("test-schemathesis.dead")


TOKEN = "schema-test-token"
schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None)
def test_the_api_answers_every_generated_request_as_documented(case: schemathesis.Case) -> None:
    # Every default check but one: the schema can only say "a file", so a schema-valid upload
    # may still be a bad CSV, and its 400 is right. Every route but the probes requires a bearer
    # credential: a case generated without one goes without the token too, and must be refused.
    sent = any(name.lower() == "authorization" for name in case.headers or {})
    auth = {"Authorization": f"Bearer {TOKEN}"} if sent else {}
    case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])
