"""Budgets: refuse new calls once the day's or month's model cost, or an identity's minutes
today, reach their caps (`TOKEN_DAILY_BUDGET_USD`, `TOKEN_MONTHLY_BUDGET_USD`,
`TOKEN_DAILY_MINUTES_PER_IDENTITY`).

The agents add up what calls cost and how long they last in Redis (`voice_calls.budget`);
this module only reads the totals, before a room is made. Live calls are never cut short
by a budget: they finish normally (their length has its own cap, `AGENT_MAX_CALL_S`).
"""

from __future__ import annotations

import time

import redis
import structlog
from voice_calls import budget

from .errors import ApiError
from .settings import Settings

log = structlog.get_logger("token_server")


class Budgets:
    """Checks a new call against the caps (0: none) with the totals in Redis.

    Args:
        client: a ``redis.Redis`` (``decode_responses=True``), shared with the agents.
        daily_usd, monthly_usd: cost caps (USD) for the UTC day and month.
        daily_minutes_per_identity: minutes one identity may talk per UTC day.
    """

    def __init__(self, client: redis.Redis, daily_usd: float, monthly_usd: float,
                 daily_minutes_per_identity: float) -> None:
        self._client = client
        self._daily_usd = daily_usd
        self._monthly_usd = monthly_usd
        self._minutes = daily_minutes_per_identity

    def check(self, identity: str, now: float | None = None) -> None:
        """Raise the refusal when a cap is reached.

        Raises:
            ApiError: 503 ``budget_exhausted`` (cost cap) or 429 ``minutes_exhausted`` (the
                identity's minutes), with ``Retry-After`` until the period ends.
            redis.RedisError: Redis unreachable (the app answers 503 storage_unavailable).
        """
        now = time.time() if now is None else now
        spent = budget.cost_cap_reached(
            self._client.hgetall(budget.day_key(now)) if self._daily_usd else {},
            self._client.hgetall(budget.month_key(now)) if self._monthly_usd else {},
            self._daily_usd, self._monthly_usd, now,
        )
        if spent is not None:
            log.warning("budget_exhausted", period=spent.period, cap_usd=spent.cap_usd)
            raise ApiError(503, "budget_exhausted",
                           f"{spent.period} call budget (USD {spent.cap_usd:g}) is spent; calls resume in "
                           f"{spent.retry_after_s // 60} min", {"Retry-After": str(spent.retry_after_s)})
        if self._minutes:
            used_s = budget.total(self._client.hgetall(budget.identity_day_key(identity, now)), "call_seconds")
            if used_s >= self._minutes * 60:
                retry = budget.seconds_to_next_day(now)
                raise ApiError(429, "minutes_exhausted",
                               f"this identity has used its {self._minutes:g} minutes of calls today; "
                               f"more in {retry // 60} min", {"Retry-After": str(retry)})


def create_budgets(settings: Settings) -> Budgets | None:
    """Budgets for `settings`: None when no cap is set or there is no Redis."""
    url = settings.redis_url.get_secret_value()
    caps = (settings.token_daily_budget_usd, settings.token_monthly_budget_usd, settings.token_daily_minutes_per_identity)
    if not any(caps):
        return None
    if not url:
        log.warning("budgets_off", reason="TOKEN_*_BUDGET_USD / TOKEN_DAILY_MINUTES_PER_IDENTITY need REDIS_URL")
        return None
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    return Budgets(client, *caps)
