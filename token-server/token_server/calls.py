"""The call-records API: what the agent recorded of each call, for operators.

``GET /api/calls`` lists calls, newest first; ``GET /api/calls/<room>`` returns one with
its events (turns with text and timestamps, tool calls and results, model usage, life
cycle); ``GET /api/calls/stats`` gives the operator console's figures (`stats`). The agent
writes the records to Redis as each call goes (`voice_calls.records` has the schema). Every
request needs ``Authorization: Bearer <key>`` with one of `RECORDS_API_KEYS`, whatever
`TOKEN_AUTH_MODE` is: records hold every caller's words.
"""

from __future__ import annotations

import time

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from voice_calls.records import is_call_room, list_calls, load_call

from .auth import KeyRing
from .errors import ApiError
from .settings import Settings
from .stats import stats as read_stats

bp = Blueprint("calls", __name__, url_prefix="/api/calls")

#: Most calls one listing returns.
MAX_LIMIT = 200


def init_app(app: Flask, settings: Settings) -> None:
    """Register the routes; Redis is `settings.redis_url` (none: the API answers 503)."""
    url = settings.redis_url.get_secret_value()
    app.extensions["calls"] = (
        KeyRing(settings.records_keys),
        redis.Redis.from_url(url, decode_responses=True) if url else None,
    )
    app.extensions["calls_caps_usd"] = (settings.token_daily_budget_usd, settings.token_monthly_budget_usd)
    app.register_blueprint(bp)


def _authorized_store() -> redis.Redis:
    keys, store = current_app.extensions["calls"]
    if not keys:
        raise ApiError(403, "records_api_disabled", "the call-records API is off: set RECORDS_API_KEYS")
    keys.check(request, "records")
    if store is None:
        raise ApiError(503, "storage_unavailable", "call records need Redis (REDIS_URL)", {"Retry-After": "60"})
    return store


def _query_number(name: str, default: float | None, low: float, high: float) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ApiError(422, "validation_error", f"{name}: must be a number from {low:g} to {high:g}")
    return value


@bp.get("")
def calls() -> Response:
    """Calls, newest first: ``{"calls": [summary, ...]}``.

    Query: ``limit`` (1-200, default 50), ``before`` (Unix time in seconds: calls that
    started earlier, for paging).
    """
    store = _authorized_store()
    limit = int(_query_number("limit", 50, 1, MAX_LIMIT) or 50)
    before = _query_number("before", None, 0, 1e11)
    return jsonify({"calls": list_calls(store, limit=limit, before=before)})


@bp.get("/stats")
def call_stats() -> Response:
    """The operator console's figures: per-turn response times of the last ``window_s``
    seconds (60-86400, default 3600), calls per hour over the last ``hours`` hours (1-168,
    default 24), and model usage with its estimated cost today, this month and per day."""
    store = _authorized_store()
    window_s = _query_number("window_s", 3600, 60, 86_400) or 3600
    hours = int(_query_number("hours", 24, 1, 168) or 24)
    daily, monthly = current_app.extensions["calls_caps_usd"]
    return jsonify(read_stats(store, time.time(), window_s=window_s, hours=hours, daily_cap_usd=daily,
                              monthly_cap_usd=monthly))


@bp.get("/<room>")
def call(room: str) -> Response:
    """One call with its events, or 404 ``not_found`` (also for a name no call can have)."""
    store = _authorized_store()
    record = load_call(store, room) if is_call_room(room) else None
    if record is None:
        raise ApiError(404, "not_found", "no call recorded for that room")
    return jsonify(record)
