"""Who is asking for a token: the three `TOKEN_AUTH_MODE`s.

* ``open``: nobody is checked; the body may name the identity. For trials on this
  machine (`Settings` refuses it on a non-loopback bind unless allowed).
* ``shared-key``: a trusted backend sends ``Authorization: Bearer <key>`` with one of
  `TOKEN_SHARED_KEYS` and names the user it asks for in the ``X-Participant-Identity``
  header. The body's ``participant_identity`` is refused.
* ``oidc``: the user's app sends ``Authorization: Bearer <ID token>``; the identity is
  the token's verified ``sub`` (`oidc`). The body's ``participant_identity`` is refused.

Refusals are `ApiError` 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``; an
unreachable identity provider is 503 ``identity_provider_unavailable``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Protocol

import structlog
from flask import Request

from .errors import ApiError
from .oidc import IdTokenRejected, OidcConfig, OidcVerifier, ProviderUnavailable
from .schemas import RESERVED_IDENTITY_PREFIX, identity_problem
from .settings import Settings

log = structlog.get_logger("token_server")

#: The header a trusted backend names its user in (shared-key mode).
IDENTITY_HEADER = "X-Participant-Identity"
#: Longest OIDC subject accepted as an identity (Auth0's ``provider|id`` subjects are ~40).
MAX_SUBJECT_LENGTH = 128
#: Printable ASCII without spaces: what every common provider's ``sub`` is made of.
_SUBJECT = re.compile(r"^[\x21-\x7e]+$")
_BEARER = re.compile(r"^Bearer +(\S+) *$", re.IGNORECASE)


@dataclass(frozen=True)
class Caller:
    """The outcome of authentication.

    `identity`: the verified LiveKit identity, or None in open mode (the body or a random
    identity decides). `mode`: the auth mode that produced it.
    """

    identity: str | None
    mode: str


class Authenticator(Protocol):
    mode: str

    def authenticate(self, request: Request) -> Caller:
        """Check `request`'s credentials.

        Raises:
            ApiError: 401 / 422 / 503 as described in the module docstring.
        """


def unauthorized(message: str, error: str = "invalid_token") -> ApiError:
    """401 with a ``WWW-Authenticate`` challenge (RFC 6750)."""
    return ApiError(
        401,
        "unauthorized",
        message,
        {"WWW-Authenticate": f'Bearer realm="token-server", error="{error}"'},
    )


def bearer_token(request: Request) -> str:
    """The credential in ``Authorization: Bearer <credential>``.

    Raises:
        ApiError: 401 when the header is missing or not a bearer credential.
    """
    header = request.headers.get("Authorization", "")
    match = _BEARER.match(header)
    if not match:
        raise ApiError(
            401,
            "unauthorized",
            "credentials required: Authorization: Bearer <credential>",
            {"WWW-Authenticate": 'Bearer realm="token-server"'},
        )
    return match.group(1)


class OpenAuth:
    """``open``: everyone is let through; identity from the body."""

    mode = "open"

    def authenticate(self, request: Request) -> Caller:
        return Caller(identity=None, mode=self.mode)


class KeyRing:
    """Bearer keys checked in constant time (the shared-key mode, the call-records API).

    Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key
    (no early exit), so neither the comparison time nor the length of a guess reveals
    anything.
    """

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, request: Request, what: str) -> None:
        """Accept the request's bearer key or refuse it.

        Raises:
            ApiError: 401 when the header is missing or the key is not one of ours.
        """
        offered = hashlib.sha256(bearer_token(request).encode()).digest()
        matched = [hmac.compare_digest(offered, digest) for digest in self._digests]
        if not any(matched):
            log.info("auth_failed", what=what, reason="unknown key")
            raise unauthorized("API key not accepted")


class SharedKeyAuth:
    """``shared-key``: a bearer key from `keys`, and the user named in `IDENTITY_HEADER`."""

    mode = "shared-key"

    def __init__(self, keys: list[str], identity_max_length: int) -> None:
        self._keys = KeyRing(keys)
        self._identity_max_length = identity_max_length

    def authenticate(self, request: Request) -> Caller:
        self._keys.check(request, self.mode)
        identity = request.headers.get(IDENTITY_HEADER)
        if identity is None:
            raise ApiError(422, "validation_error", f"{IDENTITY_HEADER}: required in shared-key mode")
        problem = identity_problem(identity, self._identity_max_length)
        if problem:
            raise ApiError(422, "validation_error", f"{IDENTITY_HEADER}: {problem}")
        return Caller(identity=identity, mode=self.mode)


class OidcAuth:
    """``oidc``: a bearer ID token; identity = its verified ``sub``."""

    mode = "oidc"

    def __init__(self, verifier: OidcVerifier) -> None:
        self._verifier = verifier

    def authenticate(self, request: Request) -> Caller:
        token = bearer_token(request)
        try:
            claims = self._verifier.verify(token)
        except IdTokenRejected as rejected:
            log.info("auth_failed", mode=self.mode, reason=rejected.reason)
            raise unauthorized(f"ID token rejected: {rejected.reason}") from None
        except ProviderUnavailable as error:
            log.warning("identity_provider_unavailable", reason=str(error))
            raise ApiError(
                503,
                "identity_provider_unavailable",
                "the identity provider's keys cannot be fetched; try again shortly",
                {"Retry-After": "10"},
            ) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH or not _SUBJECT.match(subject):
            log.info("auth_failed", mode=self.mode, reason="unusable subject")
            raise unauthorized("ID token rejected: its subject cannot be a participant identity")
        if subject.lower().startswith(RESERVED_IDENTITY_PREFIX):
            log.info("auth_failed", mode=self.mode, reason="reserved subject")
            raise unauthorized("ID token rejected: its subject uses a prefix reserved for agents")
        return Caller(identity=subject, mode=self.mode)


def create_authenticator(settings: Settings) -> Authenticator:
    """The authenticator for `settings.token_auth_mode`."""
    if settings.token_auth_mode == "shared-key":
        return SharedKeyAuth(settings.shared_keys, settings.participant_identity_max_length)
    if settings.token_auth_mode == "oidc":
        return OidcAuth(
            OidcVerifier(
                OidcConfig(
                    issuers=settings.oidc_issuers,
                    audiences=settings.oidc_audiences,
                    algorithms=settings.oidc_algorithm_list,
                    leeway_s=settings.oidc_leeway_seconds,
                    jwks_url=settings.oidc_jwks_url,
                    jwks_cache_s=settings.oidc_jwks_cache_seconds,
                )
            )
        )
    return OpenAuth()
