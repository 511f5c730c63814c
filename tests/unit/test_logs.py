"""Logging of all three services: one JSON object per line, and the password masked wherever it appears."""

import io
import json
import logging

import pytest

from kubejob import logs

SECRET = "pw-0d9e1c"


@pytest.fixture
def json_lines():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure("INFO", secrets=[SECRET])
    out = io.StringIO()
    (handler,) = root.handlers
    handler.setStream(out)  # stdout in production; a buffer here, read back line by line
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_poll_line_is_json_with_its_numbers(json_lines):
    logging.getLogger("scaler.loop").info("poll", extra={"depth": 42, "create": 2, "reason": "r"})
    (line,) = json_lines()
    assert set(line) == {"time", "level", "logger", "message", "depth", "create", "reason"}
    assert (line["message"], line["level"], line["logger"]) == ("poll", "INFO", "scaler.loop")
    assert (line["depth"], line["create"], line["reason"]) == (42, 2, "r")


def test_password_is_masked_in_message_extras_and_tracebacks(json_lines):
    log = logging.getLogger("scaler.loop")
    log.warning("failed for %s", SECRET, extra={"error": f"auth {SECRET} refused"})
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("poll crashed")
    lines = json_lines()
    assert len(lines) == 2
    assert all(SECRET not in json.dumps(line) for line in lines)
    assert logs.MASK in lines[0]["message"] and logs.MASK in lines[1]["exc_info"]


def test_library_request_logs_are_quiet(json_lines):
    logging.getLogger("httpx").info("HTTP Request: GET http://rabbitmq:15672/api/queues")
    assert json_lines() == []


def test_pika_s_warnings_are_kept_and_its_connection_retries_are_not(json_lines):
    logging.getLogger("pika.adapters.utils.connection_workflow").error("AMQPConnector - reporting failure")
    logging.getLogger("pika.adapters.base_connection").error("Full-stack connection workflow failed")
    logging.getLogger("pika.adapters.blocking_connection").handle(logging.LogRecord(
        "pika.adapters.blocking_connection", logging.ERROR, "blocking_connection.py", 450, "Connection workflow failed",
        None, None, func="_create_connection"))
    logging.getLogger("pika.adapters.blocking_connection").warning("Message was Nack'ed by broker")
    logging.getLogger("pika.channel").info("chatter")
    assert [line["message"] for line in json_lines()] == ["Message was Nack'ed by broker"]
