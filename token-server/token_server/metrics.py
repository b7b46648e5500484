"""Prometheus counters, one registry per app, served at ``GET /metrics``.

Counts are per process: run gunicorn with one worker (threads are fine) or read
each worker's numbers as partial.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

_EXTENSION = "token_server.metrics"

bp = Blueprint("metrics", __name__)


@dataclass(frozen=True)
class Metrics:
    """The server's counters.

    `tokens_issued`: ``token_server_tokens_issued_total``.
    `requests_rejected`: ``token_server_requests_rejected_total{code=...}``, by error code
    (``unauthorized``, ``rate_limited``, ``too_many_sessions``, ...).
    `webhook_events`: ``token_server_webhook_events_total{event=...}``, verified LiveKit
    webhook deliveries by event name.
    `calls_without_agent`: ``token_server_calls_without_agent_total{outcome=...}``, rooms
    whose caller had no agent: ``redispatched`` (dispatched again) or ``refused`` (told and
    closed; see `dispatch_guard`).
    """

    registry: CollectorRegistry
    tokens_issued: Counter
    requests_rejected: Counter
    webhook_events: Counter
    calls_without_agent: Counter


def init_app(app: Flask) -> Metrics:
    """Create the counters in a registry of their own and attach them to `app`."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = Metrics(
        registry=registry,
        tokens_issued=Counter(
            "token_server_tokens_issued", "Join tokens issued.", registry=registry
        ),
        requests_rejected=Counter(
            "token_server_requests_rejected",
            "Requests answered with an error, by error code.",
            ["code"],
            registry=registry,
        ),
        webhook_events=Counter(
            "token_server_webhook_events",
            "Verified LiveKit webhook deliveries, by event.",
            ["event"],
            registry=registry,
        ),
        calls_without_agent=Counter(
            "token_server_calls_without_agent",
            "Rooms whose caller had no agent: dispatched again, or told and closed.",
            ["outcome"],
            registry=registry,
        ),
    )
    app.extensions[_EXTENSION] = metrics
    app.register_blueprint(bp)
    return metrics


def get_metrics(app: Flask) -> Metrics | None:
    """The app's `Metrics`, or None before `init_app`."""
    return app.extensions.get(_EXTENSION)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus text exposition of this process's counters."""
    metrics = get_metrics(current_app)
    assert metrics is not None
    return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)
