"""An OIDC issuer of the test's own: a key pair it makes, its JWKS served on loopback, tokens it signs."""

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test"
AUDIENCE = "kube-job"


class Issuer:
    """Signs tokens with a fresh RSA key whose public half its JWKS (at `jwks_url`, once served) holds."""

    def __init__(self, kid: str = "test-key") -> None:
        self.kid, self.key = kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_url = ""

    def jwks(self) -> dict:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [public | {"kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **claims: object) -> str:
        """A token of tenant `gamma` with the scopes upload and read, valid 5 minutes, unless `claims` say else."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "someone", "iat": now, "exp": now + 300,
                   "tenant": "gamma", "scope": "upload read"} | claims
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


@contextlib.contextmanager
def serving(issuer: Issuer) -> Iterator[Issuer]:
    """The issuer's JWKS on an HTTP server on 127.0.0.1, in a thread, for as long as the block runs."""
    body = json.dumps(issuer.jwks()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.jwks_url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
