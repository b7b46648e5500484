"""A local stand-in for an OpenID Connect identity provider (Firebase Auth, Auth0,
Keycloak, Google...), for tests of the token server's ``oidc`` mode.

It does what the token server needs from a real provider, for real:

* serves ``/.well-known/openid-configuration`` and a JWKS (``/jwks.json``) over HTTP on
  127.0.0.1, and counts the JWKS fetches (to test caching);
* holds an RSA key (``RS256``, kid ``rsa-1``) and a P-256 key (``ES256``, kid ``ec-1``),
  generated with `cryptography` per instance, and signs ID tokens with them (PyJWT).

`forge_unsigned`, `forge_hmac` and `tamper` build the attacks a verifier must refuse:
``alg: none``, HS256 "signed" with the provider's public key, an edited payload.

Use::

    with OidcProvider(audience="my-app") as idp:
        token = idp.id_token("user-42")                    # RS256
        token = idp.id_token("user-42", kid="ec-1")        # ES256
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    """Unpadded base64url, as in a JWT."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class OidcProvider:
    """The stand-in provider. `issuer` is its base URL once started.

    Args:
        audience: the default ``aud`` of the tokens it signs.
    """

    def __init__(self, audience: str = "voice-appliance-test") -> None:
        self.audience = audience
        self.keys: dict[str, tuple[PrivateKey, str]] = {
            "rsa-1": (new_rsa_key(), "RS256"),
            "ec-1": (new_ec_key(), "ES256"),
        }
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        #: Test knobs for the discovery document: another ``jwks_uri``, a redirect
        #: (``Location``) instead of the document, a delay before answering (s).
        self.discovery_jwks_uri: str | None = None
        self.discovery_redirect: str | None = None
        self.discovery_delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer = ""

    # --- HTTP -------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The public half of every key, as a JWK Set."""
        keys = []
        for kid, (private, alg) in self.keys.items():
            codec = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
            jwk = codec.to_jwk(private.public_key(), as_dict=True)
            jwk.update({"kid": kid, "alg": alg, "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.endswith("/.well-known/openid-configuration"):
                    provider.discovery_fetches += 1
                    time.sleep(provider.discovery_delay_s)
                    if provider.discovery_redirect is not None:
                        self.send_response(302)
                        self.send_header("Location", provider.discovery_redirect)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if self.path != "/.well-known/openid-configuration":
                        self.send_error(404)
                        return
                    body = {"issuer": provider.issuer, "jwks_uri": provider.discovery_jwks_uri or provider.jwks_url,
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
                elif self.path == "/jwks.json":
                    provider.jwks_fetches += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- tokens -----------------------------------------------------------------------

    def claims(self, subject: str, expires_in: float = 300, **extra: Any) -> dict[str, Any]:
        """Typical ID token claims: ``iss``, ``aud``, ``sub``, ``iat``, ``exp`` (+ `extra`;
        a value of None removes that claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": subject,
                                  "iat": now, "exp": int(now + expires_in)}
        claims.update(extra)
        return {key: value for key, value in claims.items() if value is not None}

    def id_token(
        self,
        subject: str = "user-1",
        kid: str = "rsa-1",
        expires_in: float = 300,
        key: PrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """An ID token for `subject`, signed with key `kid` (or another `key`, still
        labelled `kid`: a forgery)."""
        private, alg = self.keys.get(kid, (None, "RS256"))
        signing_key = key or private
        assert signing_key is not None, f"no key {kid!r}: pass key="
        return jwt.encode(self.claims(subject, expires_in, **claims), signing_key, algorithm=alg,
                          headers={"kid": kid})

    def public_pem(self, kid: str = "rsa-1") -> bytes:
        return self.keys[kid][0].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def forge_unsigned(self, subject: str = "user-1", kid: str = "rsa-1") -> str:
        """``alg: none``: valid-looking claims, no signature."""
        header = {"alg": "none", "typ": "JWT", "kid": kid}
        return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(self.claims(subject)).encode())}."

    def forge_hmac(self, subject: str = "user-1", kid: str = "rsa-1") -> str:
        """Key confusion: HS256 with the provider's *public* key (PEM) as the HMAC secret."""
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(self.claims(subject)).encode())}"
        mac = hmac.new(self.public_pem(kid), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"


def tamper(token: str, **changes: Any) -> str:
    """`token` with its payload edited (and its original signature kept)."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
