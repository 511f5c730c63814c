"""The scaler's configuration, read once from environment variables."""

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scaler import job_template


class SettingsError(Exception):
    """The environment holds a setting the scaler cannot run with."""


class Settings(BaseSettings):
    """Every field is read from the environment variable of the same name, upper-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    rabbitmq_host: str = Field(
        "localhost",
        description="AMQP host of the broker (shared by all services; the scaler uses HTTP).",
    )
    rabbitmq_port: int = Field(
        5672, ge=1, le=65535,
        description="AMQP port of the broker.",
    )
    rabbitmq_user: str = Field(
        "guest", min_length=1,
        description="User for AMQP and the management API.",
    )
    rabbitmq_password: SecretStr = Field(
        SecretStr("guest"),
        description="Password of RABBITMQ_USER; never logged.",
    )
    rabbitmq_vhost: str = Field(
        "/", min_length=1,
        description="Virtual host that holds the queue.",
    )
    rabbitmq_management_url: str = Field(
        "http://localhost:15672",
        description="Base URL of the RabbitMQ management HTTP API, without credentials.",
    )
    queue_name: str = Field(
        "rows", min_length=1,
        description="Queue whose depth drives the scaling.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO",
        description="Lowest level that is logged.",
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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

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


def load_settings() -> Settings:
    """Read the settings, or raise SettingsError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    # Built by hand because pydantic's own text repeats the input, which may be a password.
    problems = [f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
    return "; ".join(problems)
