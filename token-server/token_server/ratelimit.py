"""Rate limits on token requests, per client address and per identity (Flask-Limiter).

Flask-Limiter owns the storage (Redis at `REDIS_URL`, or memory) and the strategy
(fixed window). The two limits are checked explicitly by the endpoint rather than by a
route decorator, because their order matters: the address limit counts every attempt,
before authentication (so guessing keys costs budget); the identity limit runs once
the caller's identity is known, after authentication.

A refused request raises `ApiError` 429 ``rate_limited`` with ``Retry-After`` (seconds).
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from .errors import ApiError
from .settings import Settings

_EXTENSION = "token_server.ratelimit"
_NAMESPACE = "token-server"


class TokenRateLimits:
    """The configured limits over the app's Flask-Limiter storage."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        redis_url = settings.redis_url.get_secret_value()
        self.limiter = Limiter(
            key_func=get_remote_address,
            app=app,
            storage_uri=redis_url or "memory://",
            storage_options={"socket_timeout": 2, "socket_connect_timeout": 2} if redis_url else {},
            strategy="fixed-window",
            key_prefix=_NAMESPACE,
            default_limits=[],
            headers_enabled=False,
        )
        self.per_address = parse_many(settings.token_rate_limit_per_address)
        self.per_identity = parse_many(settings.token_rate_limit_per_identity)

    def _spend(self, items: list[RateLimitItem], scope: str, key: str, what: str) -> None:
        strategy = self.limiter.limiter
        for item in items:
            if not strategy.hit(item, _NAMESPACE, scope, key):
                reset_at = strategy.get_window_stats(item, _NAMESPACE, scope, key).reset_time
                retry_after = max(1, math.ceil(reset_at - time.time()))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many token requests {what} (limit {item}); retry in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )

    def check_address(self, address: str) -> None:
        """Count one request from client `address`.

        Raises:
            ApiError: 429 when a per-address limit is used up.
        """
        self._spend(self.per_address, "address", address, "from this address")

    def check_identity(self, identity: str) -> None:
        """Count one request for `identity`.

        Raises:
            ApiError: 429 when a per-identity limit is used up.
        """
        self._spend(self.per_identity, "identity", identity, "for this identity")


def init_app(app: Flask, settings: Settings) -> TokenRateLimits:
    """Create the app's limits and attach them."""
    limits = TokenRateLimits(app, settings)
    app.extensions[_EXTENSION] = limits
    return limits


def get_limits() -> TokenRateLimits:
    """The current app's `TokenRateLimits`."""
    limits: TokenRateLimits = current_app.extensions[_EXTENSION]
    return limits
