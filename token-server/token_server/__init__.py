"""The appliance's token server: LiveKit's standard token endpoint.

``POST /api/token`` mints a short-lived, least-privilege join token for a fresh room
whose configuration dispatches the agent (see `tokens`), for callers authenticated as
`TOKEN_AUTH_MODE` says (`auth`), within rate limits and a per-identity session cap
(`ratelimit`, `sessions`). ``POST /api/livekit/webhook`` records LiveKit's room and
participant events (`webhooks`); ``GET /api/calls`` serves the agent's call records to
operators (`calls`); ``POST /api/calls/outbound`` has the agent phone someone
(`outbound`, through LiveKit SIP: `telephony`). Serve it with ``gunicorn 'token_server:create_app()'``.
"""

from __future__ import annotations

import structlog
from flask import Flask

from . import api, calls, errors, health, metrics, outbound, ratelimit, security, webhooks
from .admission import create_admission
from .budgets import create_budgets
from .auth import create_authenticator
from .log import configure_logging
from .sessions import create_store
from .settings import Settings, load_settings_or_exit

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app (application factory).

    Args:
        settings: configuration; None reads it from the environment and, if it is
            refused, prints one line to stderr and exits (`load_settings_or_exit`).

    Raises:
        SystemExit: only when `settings` is None and the environment is refused.
    """
    if settings is None:
        settings = load_settings_or_exit()
    configure_logging(settings.log_level)

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    errors.init_app(app)
    metrics.init_app(app)
    security.init_app(app, settings)
    ratelimit.init_app(app, settings)
    store = create_store(settings.redis_url.get_secret_value())
    app.register_blueprint(health.bp)
    api.init_app(app, settings, create_authenticator(settings), store, create_admission(settings),
                 create_budgets(settings))
    webhooks.init_app(app, settings, store)
    calls.init_app(app, settings)
    outbound.init_app(app, settings)
    if settings.token_auth_mode == "open" and settings.exposed:
        structlog.get_logger("token_server").warning(
            "open_mode_exposed", host=settings.token_server_host,
            detail="TOKEN_ALLOW_OPEN_PUBLIC=true: anyone who reaches this server gets tokens",
        )
    return app
