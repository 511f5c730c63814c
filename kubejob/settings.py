"""Settings every service reads, and the one way a service loads its own.

Each service's Settings class subclasses `ServiceSettings`; `load` turns a bad value into one
line that names the environment variable, as the README promises.
"""

import sys
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import pika
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubejob.errors import SettingsError


class ServiceSettings(BaseSettings):
    """Every field is read from the environment variable of the same name, upper-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    rabbitmq_host: str = Field("localhost", min_length=1, description="RabbitMQ host name.")
    rabbitmq_port: int = Field(5672, ge=1, le=65535, description="RabbitMQ AMQP port.")
    rabbitmq_user: str = Field("guest", min_length=1, description="RabbitMQ user.")
    rabbitmq_password: SecretStr = Field(SecretStr("guest"), description="Password of RABBITMQ_USER; never logged.")
    rabbitmq_vhost: str = Field("/", min_length=1, description="RabbitMQ virtual host that holds the queue.")
    queue_name: str = Field(
        "rows", min_length=1, description="The durable queue of rows; failed rows go to `<QUEUE_NAME>.dead`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Lowest level that is logged."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def _at_most(self, low: str, high: str) -> None:
        """For a model validator: refuse `low` set above `high`, naming both variables."""
        if getattr(self, low) > getattr(self, high):
            raise ValueError(f"{low.upper()} ({getattr(self, low)}) is more than {high.upper()} "
                             f"({getattr(self, high)}); lower the one or raise the other")

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [value.get_secret_value() for value in self.__dict__.values() if isinstance(value, SecretStr)]
        # A password inside a URL (DATABASE_URL) may be logged without the rest of the URL.
        return values + [urlsplit(value).password or "" for value in values if "://" in value]

    def connection_parameters(self, **options: object) -> pika.ConnectionParameters:
        """AMQP parameters for this broker; `options` are each service's timeouts and retries."""
        credentials = pika.PlainCredentials(self.rabbitmq_user, self.rabbitmq_password.get_secret_value())
        return pika.ConnectionParameters(
            host=self.rabbitmq_host, port=self.rabbitmq_port, virtual_host=self.rabbitmq_vhost,
            credentials=credentials, **options,
        )


S = TypeVar("S", bound=ServiceSettings)


def load(settings_class: type[S]) -> S:
    """Read the settings, or raise SettingsError naming each bad variable."""
    try:
        return settings_class()
    except ValidationError as exc:
        # Not chained: pydantic's text quotes each bad input, a password or token among them; describe() names
        # the variables without their values.
        raise SettingsError(describe(exc)) from None


# The exit code of a configuration that can never work; the worker Job fails at once on it.
EXIT_CONFIG = 2


def load_or_exit(settings_class: type[S], service: str) -> S:
    """`load` for an entry point: a bad value ends the process (EXIT_CONFIG) with one line on stderr."""
    try:
        return load(settings_class)
    except SettingsError as exc:
        sys.stderr.write(f"{service}: invalid configuration: {exc}\n")
        sys.exit(EXIT_CONFIG)


def describe(exc: ValidationError) -> str:
    """One clause per bad variable, named as the environment spells it."""
    # Built by hand because pydantic's own text repeats the input, which may be a password.
    # A check of two fields at once has no location: its message names both.
    return "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else
                     e["msg"].removeprefix("Value error, ") for e in exc.errors())


class LedgerSettings(ServiceSettings):
    """The services that write the ledger (the producer and the worker) also find PostgreSQL."""

    database_url: SecretStr = Field(
        SecretStr("postgresql://kubejob:kubejob@localhost:5432/kubejob"),
        description=("PostgreSQL of the ledger, as a libpq URL; PGUSER and PGPASSWORD fill in a URL "
                     "without credentials. Never logged."),
    )
    database_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait to connect to PostgreSQL or for a free pooled connection."
    )
    kubejob_pika_fast: bool = Field(
        True, description=("Use kubejob.pika_fast's faster paths into pika's private parts (for the pika versions "
                           "they were tested with); off, pika's public calls, with one WARNING at start."),
    )
    # A worker holds WORKER_PREFETCH bodies of up to this size at once: the worker Job's memory limit is sized
    # for the default (tests/unit/test_manifests.py). RabbitMQ refuses a body over its max_message_size (16 MiB
    # in RabbitMQ 4.0) by itself.
    max_message_bytes: int = Field(
        1024**2, gt=0, le=512 * 1024**2,
        description=("Largest message body (a row as JSON): a larger row is refused at upload, and a larger "
                     "delivery is dead-lettered by the worker without being held in memory. At most the "
                     "broker's max_message_size; a worker holds WORKER_PREFETCH of them."),
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value
