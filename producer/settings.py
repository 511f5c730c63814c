"""The producer's settings, read once from environment variables."""

from pydantic import Field, SecretStr, field_validator, model_validator

from kubejob.settings import LedgerSettings
from producer.csv_stream import Limits


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
    # A few lines' worth, for a row whose quoted fields hold line breaks (an address, a note): the csv parser
    # holds a record in several copies while it reads it, for every upload in progress.
    max_record_bytes: int = Field(
        4 * 1024**2, gt=0,
        description="Longest accepted CSV record: a row with the line breaks in its quoted fields; longer gets 400.",
    )
    # Excel's sheet takes 16,384; every name comes again in each row's message.
    max_columns: int = Field(1000, gt=0, description="Most columns the header may have; more gets 400.")
    # Room for a survey question used as a column's name.
    max_column_name_bytes: int = Field(1024, gt=0, description="Longest accepted column name; longer gets 400.")
    upload_token: SecretStr | None = Field(
        None, description=("A key of the tenant `default` with every scope, sent as `Authorization: Bearer "
                           "<token>`; never empty. Unset, with no API key and no OIDC, the API is open."),
    )
    api_key_cache_seconds: float = Field(
        5.0, ge=0, le=300, description=("How long a valid API key is trusted without asking the ledger again: "
                                        "the most a revoked key still works."),
    )
    oidc_issuer: str = Field("", description="If set, a bearer JWT from this issuer (`iss`) is accepted too.")
    oidc_jwks_url: str = Field("", description="URL of the JWKS that signs OIDC_ISSUER's tokens.")
    oidc_audience: str = Field("", description="The `aud` an OIDC token must carry; required with OIDC_ISSUER.")
    oidc_tenant_claim: str = Field("tenant", min_length=1, description="The claim of an OIDC token naming its tenant.")
    oidc_scope_claim: str = Field(
        "scope", min_length=1, description="The claim of an OIDC token holding its scopes, space-separated."
    )
    refused_upload_drop_seconds: float = Field(
        60.0, ge=0, description=("How long the body of a refused upload (401, 413, 429, 503) is read and dropped after "
                                 "the answer, up to MAX_UPLOAD_BYTES, so that the connection ends without a reset "
                                 "(which `kubectl port-forward` does not survive); past it the connection is closed."),
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="Uploads in progress at once; one more gets 429 with Retry-After."
    )
    max_open_uploads_per_tenant: int = Field(
        100, ge=1, le=10000,
        description=("Uploads of one tenant open at once (neither done nor cancelled), each a queue in RabbitMQ; "
                     "one more gets 429 with Retry-After."),
    )
    publish_window: int = Field(
        20000, ge=1, description=("The most rows published past the ledger's resume point: what a retry after any "
                                  "interruption may queue twice, and the most messages awaiting a confirm."),
    )
    confirm_timeout_seconds: float = Field(
        30.0, gt=0, description="How long to wait for the broker to confirm an upload's messages."
    )
    download_connections: int = Field(
        2, ge=1, description=("PostgreSQL connections for failed-rows downloads, a pool apart from the one uploads, "
                              "status reads and /readyz use: the most downloads read at once."),
    )
    download_timeout_seconds: float = Field(
        30.0, gt=0, description=("How long a failed-rows download waits for a download connection before 503, how "
                                 "long each of its statements may run, and how long a client may take nothing before "
                                 "its download is ended."),
    )
    ledger_retention_days: float = Field(
        7.0, gt=0, description="Uploads and row outcomes older than this are deleted from the ledger."
    )
    # Workers learn that an upload is finished or cancelled within half a second, and stop consuming its queue; a
    # queue deleted while a worker is about to consume it closes that worker's channel.
    upload_queue_grace_seconds: float = Field(
        60.0, ge=1, le=86400,
        description=("How long the queue of a finished or cancelled upload is kept before it is deleted, so that "
                     "every worker has stopped consuming it."),
    )

    @field_validator("upload_token")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # A Secret with token="" satisfies its secretKeyRef: taken as "no token", it would open the API.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty, which would leave the API open; set a token, or unset the variable")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> "Settings":
        oidc = {"OIDC_ISSUER": self.oidc_issuer, "OIDC_JWKS_URL": self.oidc_jwks_url,
                "OIDC_AUDIENCE": self.oidc_audience}
        if any(oidc.values()) and not all(oidc.values()):
            given = next(name for name, value in oidc.items() if value)
            missing = " and ".join(name for name, value in oidc.items() if not value)
            raise ValueError(f"{given}: needs {missing} too (OIDC_ISSUER, OIDC_JWKS_URL and OIDC_AUDIENCE go together)")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        self._at_most("max_line_bytes", "max_record_bytes")  # a line is a record, or part of one
        if self.producer_metrics_port == self.producer_port:
            raise ValueError(f"PRODUCER_METRICS_PORT and PRODUCER_PORT are both {self.producer_port}; the metrics "
                             "need a port of their own")
        return self

    @property
    def csv_limits(self) -> Limits:
        """What one uploaded file may hold."""
        return Limits(line_bytes=self.max_line_bytes, record_bytes=self.max_record_bytes, columns=self.max_columns,
                      column_name_bytes=self.max_column_name_bytes)
