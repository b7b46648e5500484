"""Prometheus counters and a request-time histogram, one registry per app, served at
``GET /metrics``.

With several gunicorn workers (``WEB_CONCURRENCY``), `gunicorn.conf.py` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker starts: prometheus_client then keeps every
worker's values in files there, and ``/metrics`` (whichever worker answers) sums them
(prometheus_client's multiprocess mode). With one worker the values are the process's own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

#: The variable prometheus_client reads at import: where the workers' values are kept.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Request times' bucket bounds, s: a token is minted in milliseconds; a second is an outage.
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

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
    `request_seconds`: ``token_server_request_seconds{endpoint=..., status=...}``, time from
    a request's arrival to its response, s, by Flask endpoint (``api.issue_token``, ...;
    ``none`` when no route matched) and HTTP status.
    """

    registry: CollectorRegistry
    tokens_issued: Counter
    requests_rejected: Counter
    webhook_events: Counter
    calls_without_agent: Counter
    request_seconds: Histogram


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
        request_seconds=Histogram(
            "token_server_request_seconds",
            "Time from a request's arrival to its response, by endpoint and status.",
            ["endpoint", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        ),
    )
    app.extensions[_EXTENSION] = metrics
    app.register_blueprint(bp)
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    return metrics


def _start_timer() -> None:
    g.metrics_started_at = time.perf_counter()


def _observe_request(response: Response) -> Response:
    started = g.pop("metrics_started_at", None)
    metrics = get_metrics(current_app)
    if started is not None and metrics is not None:
        metrics.request_seconds.labels(endpoint=request.endpoint or "none", status=str(response.status_code)).observe(
            time.perf_counter() - started)
    return response


def get_metrics(app: Flask) -> Metrics | None:
    """The app's `Metrics`, or None before `init_app`."""
    return app.extensions.get(_EXTENSION)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus text exposition: every worker's values in multiprocess mode, else this process's."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    metrics = get_metrics(current_app)
    assert metrics is not None
    return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)
