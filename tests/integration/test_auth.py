"""Tenants on one producer: every route authenticated by API keys, UPLOAD_TOKEN or OIDC tokens, each tenant seeing
only its own uploads, against the real PostgreSQL and RabbitMQ.

The module's keys live in a database of its own: a key in the run's shared one would end the open mode the
other tests upload in.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from producer.app import create_app
from producer.settings import Settings
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.keys import bearer, create_key, keys
from tests.helpers.ledger import as_database_url, fresh_database
from tests.helpers.oidc import AUDIENCE, ISSUER, Issuer, serving
from tests.helpers.producer import producer

CSV = b"id,name\n1,a\n2,b\n"
OTHER_CSV = b"id,name\n1,c\n"
CACHE_SECONDS = 1.0
KEY = re.compile(r"kj_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
NO_UPLOAD = "0" * 32
READS = ("/uploads", "/uploads/{id}", "/uploads/{id}/failed")


@pytest.fixture(scope="module")
def made(keys_ledger: str) -> dict[str, str]:
    """Keys made with the CLI: both scopes for tenants alpha and beta, one scope each for alpha, admin for ops."""
    return {"alpha": create_key("alpha", "upload", "read"), "beta": create_key("beta", "upload", "read"),
            "alpha_reader": create_key("alpha", "read"), "alpha_uploader": create_key("alpha", "upload"),
            "admin": create_key("ops", "admin")}


@pytest.fixture
def client(made: dict[str, str], queue_name: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(queue_name=queue_name, api_key_cache_seconds=CACHE_SECONDS))) as client:
        yield client


def send(client: TestClient, key: str | None, data: bytes = CSV, **headers: str) -> httpx.Response:
    auth = bearer(key) if key else {}
    return client.post("/upload", files={"file": ("data.csv", data, "text/csv")}, headers=auth | headers)


def uploaded(client: TestClient, key: str, data: bytes = CSV) -> str:
    response = send(client, key, data)
    assert response.status_code == 200, response.text
    return response.json()["upload_id"]


def test_every_route_but_the_probes_and_the_page_refuses_a_request_without_a_valid_key(
        client: TestClient, made: dict[str, str], broker: Broker, queue_name: str) -> None:
    upload_id = uploaded(client, made["alpha"])
    broker.delete_queue(queue_name)
    unknown = "kj_000000000000_" + "A" * 43
    wrong_secret = made["alpha"][:-1] + ("B" if made["alpha"][-1] != "B" else "C")  # its id, another secret
    for credential in (None, "not-a-key", unknown, wrong_secret):
        headers = bearer(credential) if credential else {}
        refused = send(client, credential)
        assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer"), credential
        for path in READS:
            answer = client.get(path.format(id=upload_id), headers=headers)
            assert (answer.status_code, answer.headers["www-authenticate"]) == (401, "Bearer"), (path, credential)
    assert broker.backlog(queue_name) == 0
    for path in ("/healthz", "/readyz", "/"):
        assert wait_for(lambda path=path: client.get(path).status_code == 200, what=path, timeout=10, interval=0.1)


def test_a_key_without_the_scope_a_route_needs_is_forbidden(client: TestClient, made: dict[str, str],
                                                             broker: Broker, queue_name: str) -> None:
    refused = send(client, made["alpha_reader"])
    assert refused.status_code == 403 and refused.json() == {"error": "this credential lacks the `upload` scope"}
    assert broker.upload_queues(queue_name) == []
    upload_id = uploaded(client, made["alpha_uploader"])
    for path in READS:
        answer = client.get(path.format(id=upload_id), headers=bearer(made["alpha_uploader"]))
        assert answer.status_code == 403 and "`read` scope" in answer.json()["error"], path
        assert client.get(path.format(id=upload_id), headers=bearer(made["alpha_reader"])).status_code == 200


def test_a_tenant_sees_only_its_own_uploads_and_another_s_is_a_404_as_for_none(client: TestClient,
                                                                               made: dict[str, str]) -> None:
    alphas, beta = {uploaded(client, made["alpha"]) for _ in range(2)}, uploaded(client, made["beta"])
    listed = client.get("/uploads?limit=200", headers=bearer(made["alpha"])).json()["uploads"]
    assert {u["upload_id"] for u in listed} >= alphas and {u["tenant"] for u in listed} == {"alpha"}
    assert beta not in {u["upload_id"] for u in listed}
    for path in READS[1:]:
        theirs = client.get(path.format(id=beta), headers=bearer(made["alpha"]))
        nobody = client.get(path.format(id=NO_UPLOAD), headers=bearer(made["alpha"]))
        assert (theirs.status_code, nobody.status_code) == (404, 404)
        assert theirs.json() == {"error": f"no upload {beta!r}"}
        assert nobody.json() == {"error": f"no upload {NO_UPLOAD!r}"}
        assert client.get(path.format(id=beta), headers=bearer(made["beta"])).status_code == 200
        # `admin` reads any tenant's upload; its list is still its own tenant's.
        assert client.get(path.format(id=beta), headers=bearer(made["admin"])).status_code == 200
    assert client.get("/uploads/" + beta, headers=bearer(made["admin"])).json()["tenant"] == "beta"
    assert client.get("/uploads", headers=bearer(made["admin"])).json()["uploads"] == []


def test_an_idempotency_key_is_unique_per_tenant_and_a_409_names_only_the_callers_upload(
        client: TestClient, made: dict[str, str]) -> None:
    key = {"Idempotency-Key": "shared-key"}
    alpha, beta = send(client, made["alpha"], CSV, **key), send(client, made["beta"], OTHER_CSV, **key)
    assert (alpha.status_code, beta.status_code) == (200, 200)
    assert alpha.json()["upload_id"] != beta.json()["upload_id"]
    again = send(client, made["beta"], OTHER_CSV, **key)
    assert again.status_code == 200 and again.json()["upload_id"] == beta.json()["upload_id"]
    conflict = send(client, made["alpha"], OTHER_CSV, **key)
    assert conflict.status_code == 409 and conflict.json()["upload_id"] == alpha.json()["upload_id"]


def test_an_expired_key_is_refused(client: TestClient, keys_ledger: str) -> None:
    key = create_key("alpha", "read", expires_in_days=1 / 86400)  # a second
    time.sleep(1.1)
    answer = client.get("/uploads", headers=bearer(key))
    assert answer.status_code == 401 and "expired at" in answer.json()["error"]


def test_the_keys_command_prints_the_key_alone_lists_no_secret_and_revokes(client: TestClient,
                                                                           keys_ledger: str) -> None:
    made = keys("create", "--tenant", "delta", "--scope", "read")
    *logged, key = made.stdout.splitlines()
    assert KEY.fullmatch(key), made.stdout
    key_id = key.split("_")[1]
    assert [json.loads(line)["message"] for line in logged] == ["API key created"]
    assert key not in made.stdout.replace(key + "\n", "") and key not in made.stderr
    assert client.get("/uploads", headers=bearer(key)).status_code == 200
    listed = keys("list").stdout
    row = next(line for line in listed.splitlines() if line.startswith(key_id))
    assert row.split()[1:3] == ["delta", "read"] and row.split()[-1] != "-", row  # its last use is recorded
    assert key.split("_", 2)[2] not in listed
    revoked = keys("revoke", key_id)
    assert json.loads(revoked.stdout)["message"] == "API key revoked" and json.loads(revoked.stdout)["key_id"] == key_id
    began = time.monotonic()
    wait_for(lambda: client.get("/uploads", headers=bearer(key)).status_code == 401, what="the revoked key refused",
             timeout=CACHE_SECONDS + 2, interval=0.05)
    assert time.monotonic() - began <= CACHE_SECONDS + 0.5
    assert "was revoked" in client.get("/uploads", headers=bearer(key)).json()["error"]
    assert next(line for line in keys("list").stdout.splitlines() if line.startswith(key_id)).split()[-2] != "-"
    unknown = keys("revoke", "0" * 12, check=False)
    assert unknown.returncode == 1 and "no API key" in unknown.stderr


def test_a_key_s_last_use_is_written_at_most_once_a_minute(keys_ledger: str, queue_name: str) -> None:
    key = create_key("alpha", "read")

    def row() -> tuple:
        """The key's last use and its row's version, which every write changes."""
        with psycopg.connect(keys_ledger) as conn:
            found = conn.execute("SELECT last_used_at, xmin::text FROM api_keys WHERE id = %s", (key.split("_")[1],))
            return found.fetchone() or ()

    assert row()[0] is None
    settings = Settings(queue_name=queue_name, api_key_cache_seconds=0)  # every request asks the ledger
    with TestClient(create_app(settings)) as client:
        assert client.get("/uploads", headers=bearer(key)).status_code == 200
        first = row()
        for _ in range(4):
            assert client.get("/uploads", headers=bearer(key)).status_code == 200
    assert first[0] is not None and row() == first


def test_upload_token_is_a_key_of_tenant_default_with_every_scope(made: dict[str, str], queue_name: str) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name, upload_token="s3cret"))) as client:
        assert send(client, None).status_code == 401
        ours = uploaded(client, "s3cret")
        alphas = uploaded(client, made["alpha"])
        assert client.get(f"/uploads/{ours}", headers=bearer("s3cret")).json()["tenant"] == "default"
        assert client.get(f"/uploads/{alphas}", headers=bearer("s3cret")).status_code == 200  # admin
        assert client.get(f"/uploads/{ours}", headers=bearer(made["alpha"])).status_code == 404


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving(Issuer()) as issuer:
        yield issuer


@pytest.fixture
def oidc_client(made: dict[str, str], issuer: Issuer, queue_name: str) -> Iterator[TestClient]:
    settings = Settings(queue_name=queue_name, oidc_issuer=ISSUER, oidc_jwks_url=issuer.jwks_url,
                        oidc_audience=AUDIENCE)
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_oidc_token_of_the_issuer_names_its_tenant_and_scopes(oidc_client: TestClient, issuer: Issuer,
                                                                 made: dict[str, str]) -> None:
    token = issuer.token(tenant="gamma", scope="openid upload read")
    upload_id = uploaded(oidc_client, token)
    assert oidc_client.get(f"/uploads/{upload_id}", headers=bearer(token)).json()["tenant"] == "gamma"
    assert oidc_client.get(f"/uploads/{upload_id}", headers=bearer(made["alpha"])).status_code == 404
    refused = send(oidc_client, issuer.token(scope="read"))
    assert refused.status_code == 403
    assert send(oidc_client, None).status_code == 401  # OIDC set: never open


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "https://elsewhere.test"}, "Invalid issuer"),
    ({"exp": int(time.time()) - 60}, "Signature has expired"),
    ({"aud": "another-service"}, "Audience doesn't match"),
    ({"tenant": ""}, "no `tenant` claim"),
])
def test_an_oidc_token_from_another_issuer_expired_or_for_another_audience_is_refused(
        oidc_client: TestClient, issuer: Issuer, claims: dict, reason: str) -> None:
    answer = oidc_client.get("/uploads", headers=bearer(issuer.token(**claims)))
    assert answer.status_code == 401 and reason in answer.json()["error"], answer.text


def test_an_oidc_token_while_the_issuer_s_keys_cannot_be_fetched_is_a_503_to_retry_not_a_401(
        made: dict[str, str], queue_name: str) -> None:
    issuer = Issuer()
    with serving(issuer):
        jwks_url = issuer.jwks_url  # served, then gone: the address now refuses connections
    settings = Settings(queue_name=queue_name, oidc_issuer=ISSUER, oidc_jwks_url=jwks_url, oidc_audience=AUDIENCE)
    with TestClient(create_app(settings)) as client:
        for answer in (client.get("/uploads", headers=bearer(issuer.token())), send(client, issuer.token())):
            assert (answer.status_code, answer.headers.get("retry-after")) == (503, "5"), answer.text
            assert "OIDC_JWKS_URL" in answer.json()["error"]
        assert client.get("/uploads", headers=bearer(made["alpha"])).status_code == 200  # keys still work


def test_an_oidc_token_not_signed_by_the_issuer_s_key_is_refused(oidc_client: TestClient, issuer: Issuer) -> None:
    forged = Issuer(kid=issuer.kid).token()  # the issuer's key id, another key
    symmetric = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "tenant": "gamma",
                            "scope": "read"}, "secret" * 6, algorithm="HS256", headers={"kid": issuer.kid})
    for token in (forged, symmetric):
        answer = oidc_client.get("/uploads", headers=bearer(token))
        assert answer.status_code == 401, answer.text


def test_with_no_key_the_producer_is_open_says_so_once_and_closes_when_a_key_is_made(
        queue_name: str, tmp_path: Path) -> None:
    log = tmp_path / "producer.log"
    with fresh_database() as url, as_database_url(url), \
            producer(queue_name, log=log, API_KEY_CACHE_SECONDS=str(CACHE_SECONDS)) as (base, _):
        opened = httpx.post(f"{base}/upload", files={"file": ("data.csv", CSV, "text/csv")}, timeout=30)
        assert opened.status_code == 200, opened.text
        assert httpx.get(f"{base}/uploads/{opened.json()['upload_id']}").json()["tenant"] == "default"
        key = create_key("alpha", "read")
        began = time.monotonic()
        wait_for(lambda: httpx.get(f"{base}/uploads").status_code == 401, what="the API to close",
                 timeout=CACHE_SECONDS + 3, interval=0.05)
        assert time.monotonic() - began <= CACHE_SECONDS + 1
        assert httpx.get(f"{base}/uploads", headers=bearer(key)).json()["uploads"] == []
    warnings = [json.loads(line) for line in log.read_text().splitlines() if '"WARNING"' in line]
    assert [w["message"] for w in warnings if "open" in w["message"]] == [
        "the API is open, every request is tenant `default` with every scope: neither UPLOAD_TOKEN nor OIDC_ISSUER "
        "is set and the ledger holds no API key (python -m producer.keys create)"]


def test_a_revoked_key_is_refused_by_a_running_producer_within_the_cache(keys_ledger: str, queue_name: str) -> None:
    key = create_key("alpha", "upload", "read")
    with producer(queue_name, API_KEY_CACHE_SECONDS=str(CACHE_SECONDS)) as (base, _):
        assert httpx.get(f"{base}/uploads", headers=bearer(key)).status_code == 200
        keys("revoke", key.split("_")[1])
        began = time.monotonic()
        wait_for(lambda: httpx.get(f"{base}/uploads", headers=bearer(key)).status_code == 401,
                 what="the revoked key refused", timeout=CACHE_SECONDS + 3, interval=0.05)
        assert time.monotonic() - began <= CACHE_SECONDS + 0.5
        refused = httpx.post(f"{base}/upload", files={"file": ("data.csv", CSV, "text/csv")}, headers=bearer(key))
        assert refused.status_code == 401 and "was revoked" in refused.json()["error"]


def test_who_uploaded_and_who_downloaded_failed_rows_is_logged_by_key_id_never_the_key(
        made: dict[str, str], queue_name: str, tmp_path: Path) -> None:
    log, key = tmp_path / "producer.log", made["alpha"]
    with producer(queue_name, log=log, LOG_LEVEL="INFO") as (base, _):
        upload_id = httpx.post(f"{base}/upload", files={"file": ("data.csv", CSV, "text/csv")}, headers=bearer(key),
                               timeout=30).json()["upload_id"]
        assert httpx.get(f"{base}/uploads/{upload_id}/failed", headers=bearer(key)).status_code == 200
    text = log.read_text()
    lines = {line["message"]: line for line in map(json.loads, text.splitlines())}
    key_id = key.split("_")[1]
    who = {"tenant": "alpha", "key_id": key_id, "upload_id": upload_id}
    assert who.items() <= lines["upload published"].items()
    assert who.items() <= lines["failed rows downloaded"].items()
    assert key.split("_", 2)[2] not in text
