"""Logging set up once at start: one JSON object per line."""

import logging

from pythonjsonlogger.json import JsonFormatter


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
