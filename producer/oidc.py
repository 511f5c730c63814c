"""Bearer JWTs of an OIDC issuer, verified against its JWKS: the one module that reaches PyJWT."""

from dataclasses import dataclass

import jwt

from kubejob.errors import Permanent, Temporary
from producer.settings import Settings

# Asymmetric only: with HS256 the JWKS, which is public, would be the secret that signs.
ALGORITHMS = ["RS256", "ES256"]
JWKS_TIMEOUT_SECONDS = 5
# How long the issuer's keys are kept before they are fetched again; a token of an unknown `kid` fetches at once.
JWKS_KEEP_SECONDS = 300


class InvalidToken(Permanent):
    """The token is not one of the issuer's, or not for us, or expired, or names no tenant."""


class IssuerUnavailable(Temporary):
    """The issuer's keys could not be fetched: the token may well be valid, so the answer is 503, not 401."""


@dataclass(frozen=True)
class Claims:
    tenant: str
    scopes: frozenset[str]
    subject: str


class OidcVerifier:
    """Checks a token's signature, `exp`, `iss` and `aud`, and takes its tenant and scopes from its claims."""

    def __init__(self, settings: Settings) -> None:
        self._issuer, self._audience = settings.oidc_issuer, settings.oidc_audience
        self._tenant_claim, self._scope_claim = settings.oidc_tenant_claim, settings.oidc_scope_claim
        self._jwks = jwt.PyJWKClient(settings.oidc_jwks_url, lifespan=JWKS_KEEP_SECONDS, timeout=JWKS_TIMEOUT_SECONDS)

    def claims(self, token: str) -> Claims:
        """The token's tenant, scopes and subject, or InvalidToken saying what is wrong. Blocks on a JWKS fetch."""
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, issuer=self._issuer, audience=self._audience,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable("the OIDC issuer's keys (OIDC_JWKS_URL) could not be fetched; try again "
                                    "shortly") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the OIDC token is not valid: {exc}") from exc
        tenant, scopes = claims.get(self._tenant_claim), claims.get(self._scope_claim, "")
        if not isinstance(tenant, str) or not tenant:
            raise InvalidToken(f"the OIDC token has no `{self._tenant_claim}` claim naming its tenant")
        granted = frozenset(scopes.split() if isinstance(scopes, str) else [])
        return Claims(tenant, granted, str(claims.get("sub", "")))
