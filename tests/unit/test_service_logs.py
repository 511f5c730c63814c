"""The three services log the same keys, so one query over a cluster's logs reads them all."""

import io
import json
import logging

import pytest

import producer.logs
import scaler.logs
import worker.logs

CONFIGURE = {
    "producer": lambda: producer.logs.configure("INFO"),
    "worker": lambda: worker.logs.configure("INFO"),
    "scaler": lambda: scaler.logs.configure("INFO", secrets=[]),
}


@pytest.mark.parametrize("service", CONFIGURE)
def test_a_line_has_time_level_logger_message_and_its_numbers(service: str) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        CONFIGURE[service]()
        out = io.StringIO()
        (handler,) = root.handlers
        handler.setStream(out)
        logging.getLogger(f"{service}.test").info("event", extra={"rows": 3})
        (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert set(line) == {"time", "level", "logger", "message", "rows"}
    assert (line["level"], line["logger"], line["message"], line["rows"]) == ("INFO", f"{service}.test", "event", 3)
