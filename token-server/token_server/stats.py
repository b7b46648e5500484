"""Figures for the operator console's charts, read from what the agents write to Redis
(pure functions; the route is `calls.stats`).

* per-turn response times: `voice_calls.responses` (one stream for all calls);
* calls per hour: the call listing (``voice:calls``, room -> started_at);
* model usage and estimated cost: the budgets' day and month totals (`voice_calls.budget`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from voice_calls import budget, pricing, responses
from voice_calls.records import CALLS


HOUR_S = 3600


def _period(values: dict[str, str]) -> dict[str, Any]:
    """A day's or month's totals hash as numbers (0 when absent)."""
    tokens = {f"{d}_{m}": int(budget.total(values, f"{d}_{m}_tokens"))
              for d in pricing.DIRECTIONS for m in pricing.MODALITIES}
    return {
        "cost_usd": round(budget.total(values, "cost_usd"), 6),
        "calls": int(budget.total(values, "calls")),
        "call_seconds": round(budget.total(values, "call_seconds"), 3),
        "tokens": tokens,
    }


def calls_per_hour(client: Any, now: float, hours: int) -> list[dict[str, Any]]:
    """Calls started in each of the last `hours` clock hours (UTC, the current one last):
    ``[{start (Unix s of the hour), calls}]``."""
    first = (int(now) // HOUR_S - hours + 1) * HOUR_S
    counts = [0] * hours
    for _room, started_at in client.zrangebyscore(CALLS, first, "+inf", withscores=True):
        index = int((started_at - first) // HOUR_S)
        if 0 <= index < hours:
            counts[index] += 1
    return [{"start": first + i * HOUR_S, "calls": n} for i, n in enumerate(counts)]


def usage(client: Any, now: float, daily_cap_usd: float, monthly_cap_usd: float) -> dict[str, Any]:
    """Model usage and estimated cost: today, this month, and each day of this month so far."""
    today = datetime.fromtimestamp(now, timezone.utc)
    day_starts = [today.replace(day=d, hour=0, minute=0, second=0, microsecond=0).timestamp()
                  for d in range(1, today.day + 1)]
    pipe = client.pipeline(transaction=False)
    for at in day_starts:
        pipe.hgetall(budget.day_key(at))
    pipe.hgetall(budget.month_key(now))
    *days, month = pipe.execute()
    return {
        "today": {"date": f"{today:%Y-%m-%d}", "cap_usd": daily_cap_usd or None, **_period(days[-1])},
        "month": {"month": f"{today:%Y-%m}", "cap_usd": monthly_cap_usd or None, **_period(month)},
        "days": [{"date": f"{datetime.fromtimestamp(at, timezone.utc):%Y-%m-%d}", **_period(values)}
                 for at, values in zip(day_starts, days, strict=True)],
    }


def stats(client: Any, now: float, *, window_s: float, hours: int, daily_cap_usd: float = 0.0,
          monthly_cap_usd: float = 0.0) -> dict[str, Any]:
    """The console's figures at `now` (Unix s).

    Returns:
        ``{now, window_s, response_times: [{at, room, seconds}] (turns of the last `window_s`
        s, oldest first), calls_per_hour: [{start, calls}] (the last `hours` hours),
        usage: {today, month, days}}`` (see `usage`; costs in USD at the agents' price table).
    """
    return {
        "now": now,
        "window_s": window_s,
        "response_times": responses.recent(client, now - window_s),
        "calls_per_hour": calls_per_hour(client, now, hours),
        "usage": usage(client, now, daily_cap_usd, monthly_cap_usd),
    }
