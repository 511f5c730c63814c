"""The producer's settings, read once from environment variables."""

from pydantic import Field, SecretStr, model_validator

from kubejob.settings import LedgerSettings


class Settings(LedgerSettings):
    """The broker and ledger settings, and the upload API's own."""

    producer_port: int = Field(8000, ge=1, le=65535, description="Port the HTTP API listens on.")
    producer_metrics_port: int = Field(
        9101, ge=0, le=65535,
        description="Port of the producer's Prometheus /metrics, apart from the API's; 0 serves none.",
    )
    producer_api_docs: bool = Field(
        True, description="Serve the API's description at /docs, /redoc and /openapi.json; off in the manifests.",
    )
    producer_database_wait_seconds: float = Field(
        60.0, ge=0, description="How long the producer waits at start for PostgreSQL to answer before it exits 3."
    )
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="Largest accepted upload; larger gets 413.")
    max_line_bytes: int = Field(1024**2, gt=0, description="Longest accepted CSV line; longer gets 400.")
    upload_token: SecretStr = Field(
        SecretStr(""), description="If set, POST /upload needs `Authorization: Bearer <token>`."
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="Uploads in progress at once; one more gets 429 with Retry-After."
    )
    publish_window: int = Field(
        20000, ge=1, description=("The most rows published past the ledger's resume point: what a retry after any "
                                  "interruption may queue twice, and the most messages awaiting a confirm."),
    )
    confirm_timeout_seconds: float = Field(
        30.0, gt=0, description="How long to wait for the broker to confirm an upload's messages."
    )
    ledger_retention_days: float = Field(
        7.0, gt=0, description="Uploads and row outcomes older than this are deleted from the ledger."
    )

    @model_validator(mode="after")
    def _ports_apart(self) -> "Settings":
        if self.producer_metrics_port == self.producer_port:
            raise ValueError(f"PRODUCER_METRICS_PORT and PRODUCER_PORT are both {self.producer_port}; the metrics "
                             "need a port of their own")
        return self
