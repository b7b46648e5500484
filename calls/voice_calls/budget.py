"""Usage totals for budgets: what calls cost and how long they lasted, per day and month.

The agent adds each call's model usage as it is reported (`usage_writes`, from Gemini Live's
`usageMetadata` priced with `voice_calls.pricing`) and each call's length when it ends
(`call_writes`); the token server reads the totals before it issues a token (budgets).

Keys (Redis; days and months in UTC):

    voice:usage:day:{YYYY-MM-DD}                  HASH  cost_usd, call_seconds, calls,
    voice:usage:month:{YYYY-MM}                   HASH    {direction}_{modality}_tokens
    voice:usage:identity:{identity}:day:{YYYY-MM-DD}  HASH  call_seconds, calls

Day hashes expire after `DAY_TTL_S`, month hashes after `MONTH_TTL_S`, identity hashes
after `IDENTITY_TTL_S`. Amounts are decimal strings (HINCRBYFLOAT).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

PREFIX = "voice:usage:"
DAY_TTL_S = 40 * 86_400
MONTH_TTL_S = 400 * 86_400
IDENTITY_TTL_S = 2 * 86_400

#: A write for a Redis client: (command, positional arguments).
Write = tuple[str, tuple[object, ...]]


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


def day_key(at: float) -> str:
    return f"{PREFIX}day:{_utc(at):%Y-%m-%d}"


def month_key(at: float) -> str:
    return f"{PREFIX}month:{_utc(at):%Y-%m}"


def identity_day_key(identity: str, at: float) -> str:
    return f"{PREFIX}identity:{identity}:day:{_utc(at):%Y-%m-%d}"


def seconds_to_next_day(at: float) -> int:
    """Whole seconds from `at` (Unix s) to the next 00:00 UTC, at least 1."""
    now = _utc(at)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


def seconds_to_next_month(at: float) -> int:
    """Whole seconds from `at` to the first of next month, 00:00 UTC, at least 1."""
    now = _utc(at)
    first = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((first - now).total_seconds()) + 1)


def usage_writes(tokens: Mapping[tuple[str, str], int], cost_usd: float, at: float | None = None) -> list[Write]:
    """Add one usage report ((direction, modality) -> tokens, and its cost in USD) to the day's
    and the month's totals."""
    at = time.time() if at is None else at
    writes: list[Write] = []
    for key, ttl in ((day_key(at), DAY_TTL_S), (month_key(at), MONTH_TTL_S)):
        writes.append(("hincrbyfloat", (key, "cost_usd", cost_usd)))
        writes += [("hincrby", (key, f"{d}_{m}_tokens", n)) for (d, m), n in tokens.items() if n]
        writes.append(("expire", (key, ttl)))
    return writes


def call_writes(identity: str | None, seconds: float, at: float | None = None) -> list[Write]:
    """Add one finished call of `seconds` to the day's, the month's and its identity's totals."""
    at = time.time() if at is None else at
    keys = [(day_key(at), DAY_TTL_S), (month_key(at), MONTH_TTL_S)]
    if identity:
        keys.append((identity_day_key(identity, at), IDENTITY_TTL_S))
    writes: list[Write] = []
    for key, ttl in keys:
        writes += [("hincrbyfloat", (key, "call_seconds", seconds)), ("hincrby", (key, "calls", 1)),
                   ("expire", (key, ttl))]
    return writes


def total(values: Mapping[str, str], field: str) -> float:
    """A field of a totals hash as a number (0 when absent)."""
    return float(values.get(field) or 0)


@dataclass(frozen=True)
class Spent:
    """A cost cap that is reached: `period` ("today's" or "this month's"), its cap in USD,
    and the seconds until the period ends (the HTTP ``Retry-After``)."""

    period: str
    cap_usd: float
    retry_after_s: int


def cost_cap_reached(
    day: Mapping[str, str], month: Mapping[str, str], daily_usd: float, monthly_usd: float, now: float
) -> Spent | None:
    """The first cost cap (USD; 0: none) that today's totals (`day`, the hash at `day_key`)
    or this month's (`month`) have reached at `now` (Unix s), or None. The token server
    refuses web calls with it, the agent phone calls (they do not pass the token server)."""
    for cap, totals, period, retry in (
        (daily_usd, day, "today's", seconds_to_next_day(now)),
        (monthly_usd, month, "this month's", seconds_to_next_month(now)),
    ):
        if cap and total(totals, "cost_usd") >= cap:
            return Spent(period, cap, retry)
    return None
