"""Who is calling and what they may do: tenants' API keys, UPLOAD_TOKEN, OIDC tokens, and the open mode.

A request names itself by `Authorization: Bearer <credential>`, one of:
- an API key, `kj_<id>_<secret>` (`python -m producer.keys create`), of one tenant with its scopes;
- UPLOAD_TOKEN, a key of the tenant `default` with every scope;
- where OIDC_ISSUER is set, a JWT of that issuer, its tenant and scopes taken from its claims.
With none of the three configured (no UPLOAD_TOKEN, no OIDC, no API key in the ledger) the API is
open and every request is tenant `default` with every scope: the single-user mode of local work.

Errors: `Unauthenticated` (401) and `Forbidden` (403); another tenant's upload is a 404 of the route.
Cancelling, pausing and resuming an upload take the `upload` scope, and only its own tenant's.
"""

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from kubejob.errors import Permanent
from producer.ledger import Ledger, StoredKey
from producer.oidc import InvalidToken, OidcVerifier
from producer.settings import Settings

SCOPES = ("upload", "read", "admin")
DEFAULT_TENANT = "default"
KEY_PREFIX = "kj_"
_KEY = re.compile(r"kj_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
# Valid keys remembered at once; past that the oldest is asked of the ledger again.
KEYS_CACHED = 1024
bearer = HTTPBearer(auto_error=False, description="An API key (`kj_…`), UPLOAD_TOKEN, or a token of OIDC_ISSUER.")


class Unauthenticated(Permanent):
    """No credential, or one that is unknown, wrong, expired or revoked: 401."""


class Forbidden(Permanent):
    """The credential is valid but lacks the scope the route needs: 403."""


@dataclass(frozen=True)
class Principal:
    """The caller: its tenant, its scopes, and `key_id`, which names its credential in logs without its secret."""

    tenant: str
    scopes: frozenset[str]
    key_id: str

    def allowed(self, scope: str) -> "Principal":
        """This caller, if it holds `scope` (`admin` holds `read`); else raise Forbidden."""
        if scope in self.scopes or (scope == "read" and "admin" in self.scopes):
            return self
        raise Forbidden(f"this credential lacks the `{scope}` scope")

    def may_read(self, tenant: str) -> bool:
        """Whether the caller may see an upload of `tenant`: its own, or any with `admin`."""
        return tenant == self.tenant or "admin" in self.scopes


EVERYTHING = frozenset(SCOPES)
OPEN = Principal(DEFAULT_TENANT, EVERYTHING, "open")
TOKEN = Principal(DEFAULT_TENANT, EVERYTHING, "UPLOAD_TOKEN")


def new_key() -> tuple[str, str]:
    """A new key's id and its whole text, 256 random bits after the id."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(text: str) -> str | None:
    """The id part of an API key, or None if `text` is not shaped as one."""
    match = _KEY.fullmatch(text)
    return match.group(1) if match else None


def digest(key: str) -> bytes:
    """What the ledger keeps of a key. A key is 256 random bits, too many to guess or to try offline, so one
    SHA-256 is as safe as a slow KDF (which protects passwords people choose), and costs a lookup nothing."""
    return hashlib.sha256(key.encode()).digest()


def refusal_of(exc: Unauthenticated | Forbidden) -> JSONResponse:
    """The 401 or 403 that answers `exc`."""
    if isinstance(exc, Forbidden):
        return JSONResponse({"error": str(exc)}, status_code=403)
    return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    """Turns an Authorization header into a Principal, asking the ledger for API keys.

    A valid key is remembered API_KEY_CACHE_SECONDS (or until it expires, if sooner), so a
    revoked key works that long at most. While the API is open, whether a key now exists is
    asked of the ledger at most once per API_KEY_CACHE_SECONDS, on a request without a valid
    credential; once one exists, the API stays closed until the producer restarts.
    """

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self._ledger, self._seconds = ledger, settings.api_key_cache_seconds
        self._token = settings.upload_token.get_secret_value() if settings.upload_token else None
        self._oidc = OidcVerifier(settings) if settings.oidc_issuer else None
        self._closed = self._token is not None or self._oidc is not None
        self._closed_checked = float("-inf")
        self._keys: dict[bytes, tuple[float, Principal]] = {}

    async def open(self) -> bool:
        """Whether no credential is needed: nothing configured and no API key in the ledger."""
        now = time.monotonic()
        if not self._closed and now - self._closed_checked >= self._seconds:
            self._closed, self._closed_checked = await self._ledger.any_api_key(), now
        return not self._closed

    async def principal(self, authorization: str | None) -> Principal:
        """The caller the header names; raise Unauthenticated (LedgerUnavailable if the ledger does not answer)."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip() if scheme.lower() == "bearer" else ""
        if self._token is not None and secrets.compare_digest(credential.encode(), self._token.encode()):
            return TOKEN
        if (key_id := key_id_of(credential)) is not None:
            return await self._api_key(key_id, credential)
        if self._oidc is not None and credential.count(".") == 2:
            return await self._oidc_token(self._oidc, credential)
        if await self.open():
            return OPEN
        raise Unauthenticated("a valid bearer credential is required: an API key, UPLOAD_TOKEN or an OIDC token")

    @staticmethod
    async def _oidc_token(oidc: OidcVerifier, token: str) -> Principal:
        try:
            claims = await run_in_threadpool(oidc.claims, token)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc)) from exc
        return Principal(claims.tenant, claims.scopes & EVERYTHING, f"oidc:{claims.subject}")

    async def _api_key(self, key_id: str, key: str) -> Principal:
        hashed, now = digest(key), time.monotonic()
        until, principal = self._keys.get(hashed, (0.0, None))
        if principal is not None and now < until:
            return principal
        self._keys.pop(hashed, None)
        stored, left = _valid(await self._ledger.api_key(key_id), key_id=key_id, hashed=hashed)
        if stored.last_used_at is None or (datetime.now(UTC) - stored.last_used_at).total_seconds() >= 60:
            # Recorded at most once a minute per key: a status poll must not be a write.
            await self._ledger.key_used(key_id)
        principal = Principal(stored.tenant, frozenset(stored.scopes), key_id)
        if len(self._keys) >= KEYS_CACHED:
            del self._keys[next(iter(self._keys))]
        self._keys[hashed] = (now + min(left, self._seconds), principal)
        return principal


def _valid(stored: StoredKey | None, *, key_id: str, hashed: bytes) -> tuple[StoredKey, float]:
    """The stored key of this hash and the seconds until it expires; Unauthenticated if it is unknown or dead."""
    if stored is None or not secrets.compare_digest(stored.secret_sha256, hashed):
        raise Unauthenticated(f"API key {key_id} is not known")
    if stored.revoked_at is not None:
        raise Unauthenticated(f"API key {key_id} was revoked")
    if stored.expires_at is None:
        return stored, float("inf")
    left = (stored.expires_at - datetime.now(UTC)).total_seconds()
    if left <= 0:
        raise Unauthenticated(f"API key {key_id} expired at {stored.expires_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
    return stored, left


def _authenticator(request: Request) -> Authenticator:
    return request.app.state.auth


async def _reader(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    principal = await _authenticator(request).principal(request.headers.get("authorization"))
    return principal.allowed("read")


async def _controller(request: Request,
                      _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    principal = await _authenticator(request).principal(request.headers.get("authorization"))
    return principal.allowed("upload")


def _uploader(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    # Authenticated by limits.UploadGate, before the body was read; `bearer` only documents it.
    principal: Principal = request.state.principal
    return principal


ReaderDep = Annotated[Principal, Depends(_reader)]
UploaderDep = Annotated[Principal, Depends(_uploader)]
# A caller with the `upload` scope, outside POST /upload: who may cancel, pause and resume its tenant's uploads.
ControllerDep = Annotated[Principal, Depends(_controller)]
