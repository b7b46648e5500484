"""The appliance's token server: LiveKit's standard token endpoint.

``POST /api/token`` mints a short-lived, least-privilege join token for a fresh room
whose configuration dispatches the agent (see `tokens`). Serve it with
``gunicorn 'token_server:create_app()'``.
"""

from __future__ import annotations

from flask import Flask

from . import api, errors, health, metrics
from .log import configure_logging
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
    app.register_blueprint(health.bp)
    api.init_app(app, settings)
    return app
