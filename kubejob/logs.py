"""Logging set up once at start: one JSON object per line on stdout, secrets masked."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

MASK = "***"
_PIKA_CONNECTING = ("pika.adapters.utils.connection_workflow", "pika.adapters.base_connection",
                    "pika.adapters.utils.io_services_utils")
# Where pika logs what then reaches our code as an exception: a connection that failed, a channel the broker closed.
_PIKA_RAISED = (("pika.adapters.blocking_connection", "_create_connection"), ("pika.channel", "_on_close_from_broker"))
_QUIET = ("urllib3", "kubernetes", "httpx", "httpcore")


class RedactSecrets(logging.Filter):
    """Replaces any known secret in a record's message and extra fields with a mask."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; never drops it."""
        if self._secrets:
            record.msg, record.args = self._mask(record.getMessage()), None
            if record.exc_info:
                # Formatted here so the traceback is masked too; the formatter then uses it.
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            for key, value in vars(record).items():
                if isinstance(value, str) and key != "msg":
                    setattr(record, key, self._mask(value))
        return True

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


class _NotFrom(logging.Filter):
    """Drops the records logged by one function."""

    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != self.function


def configure(level: str, *, secrets: list[str]) -> None:
    """Send every log record to stdout as JSON at `level`; call once at start."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: one line per poll is the scaler's own.
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # pika's warnings say what our code cannot see (a nack, a blocked connection), but each failed
    # connection is logged about ten times at ERROR by its connection machinery: that reaches our
    # code as an exception, which each service logs once with what it was doing.
    logging.getLogger("pika").setLevel(logging.WARNING)
    for name in _PIKA_CONNECTING:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name, function in _PIKA_RAISED:
        logging.getLogger(name).filters[:] = [_NotFrom(function)]
