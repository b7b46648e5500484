"""Verifying OpenID Connect ID tokens (PyJWT), for ``TOKEN_AUTH_MODE=oidc``.

A token is accepted only when all of these hold:

* its header's ``alg`` is one of the allowed asymmetric algorithms (``OIDC_ALGORITHMS``,
  default RS256 and ES256), so ``none`` and HMAC tokens signed with a public key are
  refused before any key is looked at;
* its ``kid`` names a key in the provider's JWKS (fetched from ``OIDC_JWKS_URL`` or the
  issuer's discovery document; the set cached by PyJWT's `PyJWKClient` for
  ``OIDC_JWKS_CACHE_SECONDS``), and that key's own
  algorithm matches the header;
* the signature verifies, and ``iss``, ``aud``, ``exp`` (and ``nbf``, ``iat`` when
  present) check out, within ``OIDC_LEEWAY_SECONDS``;
* ``sub`` is present: it becomes the LiveKit identity.

Works with any OIDC provider that publishes a JWKS: Firebase Auth, Auth0, Keycloak,
Google (see the README's Security section for each one's issuer and audience).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

#: Seconds to wait for the provider's discovery document or JWKS.
FETCH_TIMEOUT_S = 5
#: Minimum seconds between two JWKS refreshes forced by an unknown ``kid`` (PyJWT's
#: cooldown): a flood of made-up key ids cannot turn into a flood of fetches.
UNKNOWN_KID_COOLDOWN_S = 30


#: What to tell the caller for each of PyJWT's refusals (the first match wins).
_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "signature does not verify"),
    (jwt.InvalidAlgorithmError, "signing algorithm does not match the key"),
]


class IdTokenRejected(Exception):
    """The ID token is not acceptable; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderUnavailable(Exception):
    """The provider's keys could not be fetched (its fault or the network's, not the caller's)."""


@dataclass(frozen=True)
class OidcConfig:
    """What to accept. `issuers`/`audiences`: any one matches; `jwks_url` empty means
    discover it from ``issuers[0] + "/.well-known/openid-configuration"``."""

    issuers: list[str]
    audiences: list[str]
    algorithms: list[str]
    leeway_s: int = 30
    jwks_url: str = ""
    jwks_cache_s: int = 300


def discover_jwks_url(issuer: str, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """The ``jwks_uri`` of `issuer`'s OpenID discovery document.

    Raises:
        ProviderUnavailable: the document cannot be fetched, is not JSON, names another
            issuer, or has no ``jwks_uri``.
    """
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - https enforced by Settings
            document = json.load(response)
    except (OSError, ValueError) as error:
        raise ProviderUnavailable(f"discovery document not available ({type(error).__name__})") from None
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderUnavailable("discovery document is for another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise ProviderUnavailable("discovery document has no jwks_uri")
    return jwks_uri


class OidcVerifier:
    """Verifies ID tokens against one provider (thread-safe; keys cached).

    Args:
        config: what to accept.
    """

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: PyJWKClient | None = None

    def _jwks_client(self) -> PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self.config.jwks_url or discover_jwks_url(self.config.issuers[0])
                # The whole key set is cached for `jwks_cache_s`, not single keys forever:
                # a key the provider withdraws stops verifying within that time.
                self._client = PyJWKClient(
                    url,
                    cache_keys=False,
                    cache_jwk_set=True,
                    lifespan=self.config.jwks_cache_s,
                    timeout=FETCH_TIMEOUT_S,
                    cooldown_duration=UNKNOWN_KID_COOLDOWN_S,
                )
            return self._client

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`.

        Raises:
            IdTokenRejected: the token is malformed, uses a refused algorithm, names an
                unknown key, or fails signature, issuer, audience or time checks.
            ProviderUnavailable: the provider's keys could not be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise IdTokenRejected("not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            raise IdTokenRejected(f"signing algorithm not allowed (allowed: {', '.join(self.config.algorithms)})")
        if not isinstance(header.get("kid"), str):
            raise IdTokenRejected("no key id (kid) in the token header")
        try:
            key = self._jwks_client().get_signing_key(header["kid"])
        except PyJWKClientConnectionError:
            raise ProviderUnavailable("JWKS not available") from None
        except PyJWKSetError:
            raise ProviderUnavailable("JWKS has no usable keys") from None
        except PyJWKClientError:
            raise IdTokenRejected("unknown signing key (kid)") from None
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self.config.algorithms,
                audience=self.config.audiences,
                issuer=self.config.issuers,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.MissingRequiredClaimError as error:
            raise IdTokenRejected(f"missing claim {error.claim!r}") from None
        except jwt.PyJWTError as error:
            reason = next((text for kind, text in _REASONS if isinstance(error, kind)), "token is invalid")
            raise IdTokenRejected(reason) from None
