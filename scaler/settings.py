"""The scaler's configuration, read once from environment variables."""

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from kubejob.settings import LedgerSettings, ServiceSettings
from scaler import job_template

_LEDGER = LedgerSettings.model_fields


class Settings(ServiceSettings):
    """The broker settings every service has, the ledger's, and the scaler's own."""

    # The ledger says which uploads are paused, cancelled or finished. These two are LedgerSettings' own (its
    # other fields are the producer's and the worker's), with the same defaults and meaning.
    database_url: SecretStr = Field(
        _LEDGER["database_url"].default, description=_LEDGER["database_url"].description,
    )
    database_timeout_seconds: float = Field(
        _LEDGER["database_timeout_seconds"].default, gt=0,
        description="Longest wait to connect to PostgreSQL, and for the scaler's read of the open uploads.",
    )
    rabbitmq_management_url: str = Field(
        "http://localhost:15672",
        description="Base URL of the RabbitMQ management HTTP API, without credentials.",
    )

    scaler_threshold: int = Field(
        20, ge=0,
        description="Depth above which Jobs are sized to the backlog (at or below: small backlog).",
    )
    # 500 rows keep one worker busy long enough to repay its pod start-up (seconds) without
    # leaving a lone Job grinding through a huge file while the others sit at the max.
    scaler_messages_per_job: int = Field(
        500, ge=1,
        description="Messages of backlog that justify one more Job.",
    )
    scaler_max_jobs: int = Field(
        5, ge=1,
        description="Most unfinished Jobs the scaler lets exist at once.",
    )
    scaler_poll_seconds: float = Field(
        5.0, ge=0.5,
        description="Seconds between two polls of the queue and the Jobs.",
    )
    scaler_small_backlog_wait_seconds: float = Field(
        60.0, ge=0,
        description="Seconds a small backlog may wait with no worker before one Job starts.",
    )
    scaler_max_backoff_seconds: float = Field(
        30.0, ge=0.5,
        description="Longest wait between retries after the broker or the Kubernetes API failed.",
    )
    scaler_stuck_seconds: float = Field(
        120.0, ge=0,
        description=("Seconds a worker pod may be Unschedulable or wait on its image or a crash loop "
                     "before the scaler warns about it, and stops counting its Job if the template has changed."),
    )
    # From the first failed or stuck Job, 10 s doubling: at the 600 s cap, about 11 Jobs an hour.
    scaler_job_backoff_seconds: float = Field(
        10.0, ge=0,
        description="Wait before the next Job after a Job failed or got stuck with the queue not shrinking; doubles.",
    )
    scaler_job_backoff_max_seconds: float = Field(
        600.0, ge=0,
        description="Longest wait between Jobs while recent Jobs keep failing or getting stuck.",
    )
    scaler_http_timeout_seconds: float = Field(
        5.0, gt=0,
        description=("Timeout of each management API call and AMQP read; Kubernetes calls get it "
                     "to connect and again to read."),
    )
    scaler_job_template: str = Field(
        "",
        description="YAML of the batch/v1 Job to create; empty: scaler/job-template.yaml.",
    )
    pod_namespace: str = Field(
        "default", min_length=1,
        description="Namespace the Jobs are listed and created in.",
    )
    pod_name: str = Field(
        "", description="The scaler's own Pod (downward API): its Warning Events are about it, else the Deployment.",
    )
    pod_uid: str = Field("", description="That Pod's uid (downward API), so `kubectl describe pod` lists them.")
    scaler_metrics_port: int = Field(
        9103, ge=0, le=65535, description="Port of the scaler's Prometheus /metrics; 0 serves none.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "Settings":
        self._at_most("scaler_job_backoff_seconds", "scaler_job_backoff_max_seconds")
        self._at_most("scaler_poll_seconds", "scaler_max_backoff_seconds")
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        return LedgerSettings._postgres_url(value)

    @field_validator("rabbitmq_management_url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            # A password in the URL would end up in error messages and logs.
            raise ValueError("must not hold credentials; set RABBITMQ_USER and RABBITMQ_PASSWORD")
        return value.rstrip("/")

    @field_validator("scaler_job_template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        job_template.load(value)
        return value

    def job_template(self) -> dict:
        """The Job manifest the scaler creates, already validated."""
        return job_template.load(self.scaler_job_template)

