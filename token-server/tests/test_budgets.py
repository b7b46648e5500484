"""Budgets against a real Redis, with totals written the way the agent writes them
(`voice_calls.budget`): the day's and month's cost caps, an identity's minutes per day."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient
from voice_calls import budget, pricing

from token_server import create_app
from tokenserver_testing import make_settings


def add(url: str, writes: list[budget.Write]) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    for op, args in writes:
        getattr(client, op)(*args)


def app_client(url: str, **caps: float) -> FlaskClient:
    settings = make_settings(redis_url=url, token_admission_control=False, token_max_sessions_per_identity=100,
                             token_rate_limit_per_address="1000/minute", **caps)
    return create_app(settings).test_client()


def ask(client: FlaskClient, identity: str | None = None) -> tuple[int, dict, dict]:
    response = client.post("/api/token", json={"participant_identity": identity} if identity else {})
    return response.status_code, response.get_json(), dict(response.headers)


def test_the_daily_budget_refuses_new_calls_once_spent(redis_url: str) -> None:
    client = app_client(redis_url, token_daily_budget_usd=1.0)
    assert ask(client)[0] == 201
    # A call's model usage as the stand-in reports it: 200k audio tokens in, 50k out.
    tokens = {("input", "audio"): 200_000, ("output", "audio"): 50_000}
    cost = pricing.cost_usd(tokens, pricing.DEFAULT_PRICES_USD_PER_MTOK)
    assert cost == pytest.approx(0.6 + 0.6)
    add(redis_url, budget.usage_writes(tokens, cost))
    status, body, headers = ask(client)
    assert (status, body["error"]["code"]) == (503, "budget_exhausted")
    assert body["error"]["message"].startswith("today's call budget (USD 1) is spent; calls resume in ")
    assert 0 < int(headers["Retry-After"]) <= 86_400 + 1
    totals = redis.Redis.from_url(redis_url, decode_responses=True).hgetall(budget.day_key(time.time()))
    assert totals["input_audio_tokens"] == "200000" and float(totals["cost_usd"]) == pytest.approx(1.2)


def test_the_monthly_budget_counts_every_day_of_the_month(redis_url: str) -> None:
    client = app_client(redis_url, token_monthly_budget_usd=5.0, token_daily_budget_usd=100.0)
    now = time.time()
    add(redis_url, budget.usage_writes({("output", "audio"): 300_000}, 3.6, at=now))
    assert ask(client)[0] == 201
    add(redis_url, budget.usage_writes({("output", "audio"): 200_000}, 2.4, at=now))
    status, body, headers = ask(client)
    assert (status, body["error"]["code"]) == (503, "budget_exhausted")
    assert body["error"]["message"].startswith("this month's call budget (USD 5) is spent")
    assert int(headers["Retry-After"]) == pytest.approx(budget.seconds_to_next_month(time.time()), abs=5)


def test_an_identity_runs_out_of_minutes_others_do_not(redis_url: str) -> None:
    client = app_client(redis_url, token_daily_minutes_per_identity=10)
    add(redis_url, budget.call_writes("ada", 7 * 60))
    assert ask(client, "ada")[0] == 201
    add(redis_url, budget.call_writes("ada", 3 * 60 + 1))
    status, body, _ = ask(client, "ada")
    assert (status, body["error"]["code"]) == (429, "minutes_exhausted")
    assert body["error"]["message"].startswith("this identity has used its 10 minutes of calls today")
    assert ask(client, "bob")[0] == 201


def test_no_caps_no_checks(redis_url: str) -> None:
    add(redis_url, budget.usage_writes({("output", "audio"): 10_000_000}, 120.0))
    assert ask(app_client(redis_url))[0] == 201


def test_periods_are_utc_days_and_months() -> None:
    at = 1_767_225_599.0  # 2025-12-31 23:59:59 UTC
    assert budget.day_key(at) == "voice:usage:day:2025-12-31" and budget.month_key(at) == "voice:usage:month:2025-12"
    assert budget.seconds_to_next_day(at) == 2 and budget.seconds_to_next_month(at) == 2
    assert budget.day_key(at + 1) == "voice:usage:day:2026-01-01"
