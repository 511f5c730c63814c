"""Our exceptions, and when each is raised.

A library's exception (psycopg, pika, httpx, kubernetes, pydantic) is translated into one of
these where our code calls it, its cause chained; the rest of the code never sees the library's.
A class written with its module lives there, beside the code that raises it; the others live here,
shared by the services. The tree (tests/unit/test_errors.py holds it to the classes):

* KubeJobError — the base of every error of ours; never raised itself
  * Temporary — a service we depend on failed; the same request may succeed later
    * LedgerUnavailable — PostgreSQL could not be reached or failed a statement (producer and worker ledgers)
    * BrokerUnavailable — RabbitMQ could not be reached, closed the connection, or did not confirm a message
      * worker.copies.CopiesNotConfirmed — the broker nacked or returned a copy of a failed row
    * producer.routes.UploadInterrupted — publishing stopped part-way, as the broker or the ledger failed
    * producer.ledger.UploadBusy — another request is publishing the upload of this Idempotency-Key
    * producer.ledger.TooManyOpen — the tenant has MAX_OPEN_UPLOADS_PER_TENANT uploads open already
    * producer.oidc.IssuerUnavailable — the OIDC issuer's keys (OIDC_JWKS_URL) could not be fetched
    * producer.ledger.DownloadsBusy — every download connection stayed taken for DOWNLOAD_TIMEOUT_SECONDS
    * scaler.queue_counts.QueueReadError — the queue's counts could not be read (management API or AMQP)
      * scaler.queue_counts.StatsNotReady — the broker answered, but without the queue's counts (yet)
    * scaler.kube.KubeError — the Kubernetes API could not be reached or refused a request
    * worker.rows.RowTimedOut — a handler outlived WORKER_ROW_TIMEOUT_SECONDS; the worker process ends
  * producer.status.ClientStalled — a download's client took nothing for DOWNLOAD_TIMEOUT_SECONDS; it is ended
  * Permanent — no retry of the same request, file or row can succeed
    * SettingsError — kubejob.settings.load: the environment holds a setting the service cannot run with
    * kubejob.message.BadMessage — a message whose body is not a row (also a ValueError)
    * producer.csv_stream.CsvError — the file is not a CSV we can publish (also a ValueError)
    * producer.ledger.KeyReused — the Idempotency-Key was first used with another file or other parameters
    * producer.publisher.MessageTooLarge — RabbitMQ refused a message over its max_message_size
    * producer.publisher.UploadRefused — the broker cannot take this file as it is; the upload is `failed`
    * producer.auth.Unauthenticated — no credential, or one unknown, wrong, expired or revoked: 401
    * producer.auth.Forbidden — the credential lacks the scope the route needs: 403
    * producer.oidc.InvalidToken — a bearer JWT not of OIDC_ISSUER, not for OIDC_AUDIENCE, expired, or with no tenant
    * worker.consumer.QueueMismatch — the queue exists with other arguments than ours
    * worker.handlers.HandlerNotFound — WORKER_HANDLER names no function that can be imported (also a ValueError)
    * worker.settle.GaveUp — workers kept dying while handling the row; it is not started again
    * worker.settle.MessageTooLarge — a row's body is over MAX_MESSAGE_BYTES; it was dropped as it arrived
    * scaler.job_template.TemplateError — the Job template cannot be used to create Jobs (also a ValueError)
"""


class KubeJobError(Exception):
    """The base of every error of ours."""


class Temporary(KubeJobError):
    """A service we depend on failed; the same request may succeed later."""


class Permanent(KubeJobError):
    """No retry of the same request, file or row can succeed."""


class LedgerUnavailable(Temporary):
    """PostgreSQL could not be reached or failed a statement."""


class BrokerUnavailable(Temporary):
    """RabbitMQ could not be reached, closed the connection, or did not confirm a message."""


class SettingsError(Permanent):
    """The environment holds a setting the service cannot run with."""
