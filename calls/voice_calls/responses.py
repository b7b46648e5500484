"""Per-turn response times, for the operator console's chart: one stream for all calls.

The agent adds each turn's response time (the end of the caller's speech to the reply's
first audio, as `voice_agent_turn_response_seconds` measures it) with `response_writes`;
the token server reads the recent ones back (`GET /api/calls/stats`).

Key (Redis):

    voice:responses   STREAM  room, at (Unix s), seconds; entry ids are Redis's clock in ms;
                              capped at about `MAX_ENTRIES` entries, oldest trimmed first
"""

from __future__ import annotations

import time

KEY = "voice:responses"
#: Entries kept (about: trimmed with ``MAXLEN ~``); a day of busy turns.
MAX_ENTRIES = 50_000

#: A write for a Redis client: (command, positional arguments), as `voice_calls.budget.Write`.
Write = tuple[str, tuple[object, ...]]


def response_writes(room: str, seconds: float, at: float | None = None) -> list[Write]:
    """Add one turn of `room` that took `seconds` from the caller's speech to the reply's audio."""
    at = time.time() if at is None else at
    fields = {"room": room, "at": f"{at:.3f}", "seconds": f"{seconds:.3f}"}
    # redis-py: xadd(name, fields, id, maxlen, approximate)
    return [("xadd", (KEY, fields, "*", MAX_ENTRIES, True))]


def recent(client: object, since: float, limit: int = MAX_ENTRIES) -> list[dict[str, object]]:
    """Turns since `since` (Unix s), oldest first: ``[{at, room, seconds}]`` (s).

    `client` is a synchronous ``redis.Redis`` with ``decode_responses=True``.
    """
    entries = client.xrange(KEY, min=str(max(0, int(since * 1000))), max="+", count=limit)  # type: ignore[attr-defined]
    out: list[dict[str, object]] = []
    for _id, fields in entries:
        try:
            out.append({"at": float(fields["at"]), "room": fields["room"], "seconds": float(fields["seconds"])})
        except (KeyError, ValueError):
            continue
    return out
