"""Verifying OpenID Connect ID tokens (PyJWT), for ``TOKEN_AUTH_MODE=oidc``.

A token is accepted only when all of these hold:

* its header's ``alg`` is one of the allowed asymmetric algorithms (``OIDC_ALGORITHMS``,
  default RS256 and ES256), so ``none`` and HMAC tokens signed with a public key are
  refused before any key is looked at;
* its ``kid`` names a key in the provider's JWKS (fetched from ``OIDC_JWKS_URL`` or the
  issuer's discovery document; the set cached by PyJWT's `PyJWKClient` for
  ``OIDC_JWKS_CACHE_SECONDS``), and that key's own
  algorithm matches the header. Discovery follows no redirect and accepts only an
  https ``jwks_uri`` (http on this machine only); a failed discovery is remembered for
  `DISCOVERY_RETRY_S` and only one request at a time runs it, so a dead provider costs
  one fetch per interval, not one per request queued behind a lock;
* the signature verifies, and ``iss``, ``aud``, ``exp`` (and ``nbf``, ``iat`` when
  present) check out, within ``OIDC_LEEWAY_SECONDS``;
* ``sub`` is present: it becomes the LiveKit identity.

Works with any OIDC provider that publishes a JWKS: Firebase Auth, Auth0, Keycloak,
Google (see the README's Security section for each one's issuer and audience).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

from .addresses import is_https_or_loopback

#: Seconds to wait for the provider's discovery document or JWKS.
FETCH_TIMEOUT_S = 5
#: Minimum seconds between two JWKS refreshes forced by an unknown ``kid`` (PyJWT's
#: cooldown): a flood of made-up key ids cannot turn into a flood of fetches.
UNKNOWN_KID_COOLDOWN_S = 30
#: Seconds a failed discovery is remembered before the next request tries again.
DISCOVERY_RETRY_S = 30.0


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
    discovery_retry_s: float = DISCOVERY_RETRY_S


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect (urllib then raises `HTTPError` with the 3xx status)."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


def discover_jwks_url(issuer: str, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """The ``jwks_uri`` of `issuer`'s OpenID discovery document.

    Raises:
        ProviderUnavailable: the document cannot be fetched (a redirect counts as a
            failure), is not JSON, names another issuer, or has no ``jwks_uri`` that is
            https (http only on this machine).
    """
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(url, timeout=timeout_s) as response:  # https enforced by Settings
            document = json.load(response)
    except urllib.error.HTTPError as error:
        error.close()
        raise ProviderUnavailable(f"discovery document not available (HTTP {error.code})") from None
    except (OSError, ValueError) as error:
        raise ProviderUnavailable(f"discovery document not available ({type(error).__name__})") from None
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderUnavailable("discovery document is for another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not is_https_or_loopback(jwks_uri):
        raise ProviderUnavailable("discovery document has no https jwks_uri")
    return jwks_uri


class OidcVerifier:
    """Verifies ID tokens against one provider (thread-safe; keys cached).

    Args:
        config: what to accept.
    """

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._lock = threading.Lock()  # guards the fields below; never held while fetching
        self._client: PyJWKClient | None = None
        self._failure = ""  # why the last discovery failed, until `_retry_at` (monotonic s)
        self._retry_at = 0.0
        self._discovering: threading.Event | None = None

    def _jwks_client(self) -> PyJWKClient:
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._retry_at:
                raise ProviderUnavailable(self._failure)
            running = self._discovering
            if running is None:
                self._discovering = threading.Event()
        if running is not None:  # another request is discovering: wait for its answer
            running.wait(FETCH_TIMEOUT_S + 1)
            with self._lock:
                if self._client is not None:
                    return self._client
                raise ProviderUnavailable(self._failure or "discovery document not available yet")
        return self._discover()

    def _discover(self) -> PyJWKClient:
        client: PyJWKClient | None = None
        failure = ""
        try:
            url = self.config.jwks_url or discover_jwks_url(self.config.issuers[0])
            # The whole key set is cached for `jwks_cache_s`, not single keys forever:
            # a key the provider withdraws stops verifying within that time.
            client = PyJWKClient(
                url,
                cache_keys=False,
                cache_jwk_set=True,
                lifespan=self.config.jwks_cache_s,
                timeout=FETCH_TIMEOUT_S,
                cooldown_duration=UNKNOWN_KID_COOLDOWN_S,
            )
            return client
        except ProviderUnavailable as error:
            failure = str(error)
            raise
        finally:
            with self._lock:
                self._client = client
                if client is None:
                    self._failure = failure or "discovery failed"
                    self._retry_at = time.monotonic() + self.config.discovery_retry_s
                done, self._discovering = self._discovering, None
            if done is not None:
                done.set()

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
