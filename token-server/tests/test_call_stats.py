"""`GET /api/calls/stats`: the operator console's figures, from what the agents write to Redis."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient
from voice_calls import budget, responses

from test_calls_api import RECORDS_KEY, auth, conforms, record_call
from token_server import create_app
from tokenserver_testing import make_settings

HOUR_S = 3600


@pytest.fixture
def stats_client(redis_server: str) -> FlaskClient:
    settings = make_settings(records_api_keys=RECORDS_KEY, redis_url=redis_server, token_daily_budget_usd=5.0)
    return create_app(settings).test_client()


def apply(store: redis.Redis, writes: list[budget.Write]) -> None:
    """Run the agent's writes (`(command, args)`) as its recorder does."""
    for op, args in writes:
        getattr(store, op)(*args)


def test_stats_sum_what_the_agents_wrote(stats_client: FlaskClient, store: redis.Redis) -> None:
    now = time.time()
    hour = int(now) // HOUR_S * HOUR_S
    record_call(store, "room-now", now - 5)
    record_call(store, "room-hour-ago", hour - HOUR_S + 10)
    record_call(store, "room-yesterday", now - 30 * HOUR_S)
    apply(store, responses.response_writes("room-now", 0.75))
    apply(store, responses.response_writes("room-now", 1.25))
    apply(store, budget.usage_writes({("input", "audio"): 2000, ("output", "audio"): 1000}, 0.018))
    apply(store, budget.call_writes("user-a", 42.5))

    response = conforms(stats_client.get("/api/calls/stats", headers=auth()), "/api/calls/stats")
    assert response.status_code == 200
    body = response.get_json()
    assert [(r["room"], r["seconds"]) for r in body["response_times"]] == [("room-now", 0.75), ("room-now", 1.25)]
    hours = body["calls_per_hour"]
    assert len(hours) == 24 and hours[-1]["start"] == hour
    assert (hours[-2]["calls"], hours[-1]["calls"]) == (1, 1) and sum(h["calls"] for h in hours) == 2
    today, month = body["usage"]["today"], body["usage"]["month"]
    assert today["cost_usd"] == pytest.approx(0.018) and today["cap_usd"] == 5.0
    assert today["tokens"] == {"input_audio": 2000, "input_text": 0, "output_audio": 1000, "output_text": 0}
    assert (today["calls"], today["call_seconds"]) == (1, 42.5)
    assert month["cost_usd"] == pytest.approx(0.018) and month["cap_usd"] is None
    assert body["usage"]["days"][-1]["date"] == today["date"]
    assert len(body["usage"]["days"]) == int(today["date"][-2:])

    hourly = stats_client.get("/api/calls/stats?hours=1&window_s=60", headers=auth()).get_json()
    assert [h["calls"] for h in hourly["calls_per_hour"]] == [1]
    assert len(hourly["response_times"]) == 2


def test_stats_need_a_records_key_and_sane_numbers(stats_client: FlaskClient) -> None:
    refused = conforms(stats_client.get("/api/calls/stats"), "/api/calls/stats")
    assert refused.status_code == 401
    for query in ("hours=0", "hours=500", "window_s=1", "window_s=x"):
        bad = conforms(stats_client.get(f"/api/calls/stats?{query}", headers=auth()), "/api/calls/stats")
        assert bad.status_code == 422, query
        assert bad.get_json()["error"]["code"] == "validation_error"
