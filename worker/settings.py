"""The worker's settings, read once from environment variables."""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    """Every field is an environment variable of the same name in upper case."""

    rabbitmq_host: str = Field("localhost", description="RabbitMQ host name.")
    rabbitmq_port: int = Field(5672, ge=1, le=65535, description="RabbitMQ AMQP port.")
    rabbitmq_user: str = Field("guest", description="RabbitMQ user.")
    rabbitmq_password: SecretStr = Field(SecretStr("guest"), description="RabbitMQ password.")
    rabbitmq_vhost: str = Field("/", description="RabbitMQ virtual host.")
    queue_name: str = Field("rows", min_length=1, description="Queue to drain.")
    worker_handler: str = Field(
        "worker.handlers:checksum_row",
        pattern=r"^[\w.]+:\w+$",
        description="`module:function` called with each row (a dict); raising means the row failed.",
    )
    worker_prefetch: int = Field(100, ge=1, le=65535, description="Unacked messages a worker holds at once.")
    worker_max_attempts: int = Field(3, ge=1, description="Attempts before a failing row is dead-lettered.")
    worker_idle_seconds: float = Field(5.0, gt=0, description="Exit 0 after the queue has been empty this long.")
    worker_shutdown_seconds: float = Field(
        20.0, gt=0, description="On SIGTERM, how long the row in hand may finish before it is returned."
    )
    worker_heartbeat_seconds: int = Field(30, ge=0, description="AMQP heartbeat; kept up while a handler runs.")
    log_level: str = Field("INFO", description="Python log level.")
