"""The worker's settings, read once from environment variables."""

from pydantic import Field, field_validator, model_validator

from kubejob.backoff import doubling
from kubejob.settings import LedgerSettings
from worker import handlers


class Settings(LedgerSettings):
    """The broker and ledger settings, and the worker's own."""

    worker_handler: str = Field(
        "worker.handlers:checksum_row",
        pattern=r"^[\w.]+:\w+$",
        description="`module:function` called with each row (a dict); raising means the row failed.",
    )
    worker_prefetch: int = Field(
        300, ge=1, le=65535,
        description="Unacked messages a worker holds at once; at least twice WORKER_CONCURRENCY is taken.",
    )
    worker_concurrency: int = Field(
        1, ge=1, le=1000,
        description=("Rows a worker handles at once: threads for an ordinary function, tasks on one event loop "
                     "for an `async def` one."),
    )
    worker_max_attempts: int = Field(
        3, ge=1, description=("Attempts before a row is dead-lettered: its handler raised, outlived "
                              "WORKER_ROW_TIMEOUT_SECONDS, or the worker died while handling it."),
    )
    worker_retry_delay_seconds: float = Field(
        1.0, ge=0, description="Wait before a row's second attempt; it doubles with each further attempt."
    )
    worker_retry_max_delay_seconds: float = Field(60.0, ge=0, description="Longest wait before a retry.")
    worker_row_timeout_seconds: float = Field(
        600.0, gt=0, description="A handler running longer counts as a failed attempt and the worker exits 4."
    )
    worker_idle_seconds: float = Field(5.0, gt=0, description="Exit 0 after the queue has been empty this long.")
    worker_linger_seconds: float = Field(
        0.05, ge=0, le=1,
        description=("After a delivery of fewer rows than half the prefetch, wait this long for more, and let a "
                     "finished row wait this long for the handlers still running, so that they are recorded and "
                     "acked in one batch; 0 hands out and records every row at once."),
    )
    worker_shutdown_seconds: float = Field(
        20.0, gt=0, description="On SIGTERM, how long the row in hand may finish before it is returned."
    )
    worker_heartbeat_seconds: int = Field(30, ge=0, description="AMQP heartbeat; kept up while a handler runs.")
    worker_database_retry_seconds: float = Field(
        60.0, gt=0, description="How long an unreachable PostgreSQL is retried before the worker exits 3."
    )
    worker_metrics_port: int = Field(
        9102, ge=0, le=65535, description="Port of the worker's Prometheus /metrics while it runs; 0 serves none."
    )

    @model_validator(mode="after")
    def _ordered(self) -> "Settings":
        self._at_most("worker_retry_delay_seconds", "worker_retry_max_delay_seconds")
        return self

    @field_validator("worker_handler")
    @classmethod
    def _importable(cls, value: str) -> str:
        handlers.load(value)  # fails at start, not at the first row
        return value

    @property
    def prefetch(self) -> int:
        """WORKER_PREFETCH, raised so that each of the WORKER_CONCURRENCY handlers has a row waiting behind it."""
        return max(self.worker_prefetch, 2 * self.worker_concurrency)

    @property
    def batch_rows(self) -> int:
        """Finished rows recorded and acked at once, with no wait for the handlers still running (worker.linger).

        Half the prefetch: the rows waiting for their ack hold the rest of it, so the handlers
        still get rows. A single handler's rows are recorded as they finish.
        """
        return 1 if self.worker_concurrency == 1 else self.prefetch // 2

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` before the next one."""
        return doubling(self.worker_retry_delay_seconds, attempt - 1, cap_s=self.worker_retry_max_delay_seconds)

    def handler(self) -> handlers.Handler:
        """The function WORKER_HANDLER names, already checked to import."""
        return handlers.load(self.worker_handler)
