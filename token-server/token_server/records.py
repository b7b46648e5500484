"""Read the call records the agent writes to Redis (pure functions; no routes here).

The agent (`agent/voice_agent/records.py`) is the writer and documents the schema; in short:

    voice:call:{room}          HASH    room, participant_identity, participant_name, metadata,
                                       started_at, ended_at, end_reason, jobs, redispatches
                                       [, phone_number, sip_call_id, direction: phone calls]
                                       [, video_frames: calls the caller showed video in]
                                       [, agent_state: listening, thinking, speaking ...]
    voice:call:{room}:events   STREAM  type (turn|tool|usage|lifecycle|sources|response), at, job, seq,
                                       data (JSON)
    voice:calls                ZSET    room -> started_at
    voice:calls:open           SET     rooms whose call has not ended
    voice:call:{room}:accepted STRING  a worker accepted the room's job (job id)

`load_session(redis, room)` and `list_sessions(redis, ...)` take a synchronous
`redis.Redis` (either `decode_responses` setting) and return plain JSON-ready dicts; the
HTTP API that exposes them must sit behind the token server's authentication.
"""

from __future__ import annotations

import json
import re
from typing import Any

PREFIX = "voice:"
CALLS = f"{PREFIX}calls"
OPEN_CALLS = f"{PREFIX}calls:open"
#: Summary fields only phone calls have.
PHONE_FIELDS = ("phone_number", "sip_call_id", "direction")


#: Room names a call can have: the token server's ``room-...``, telephony's ``call-_+1555..._...``
#: and ``call-out-...``; never ``:`` (the key separator), so a name cannot reach another key.
CALL_ROOM = re.compile(r"[A-Za-z0-9_.+=@-]{1,256}")


def is_call_room(room: str) -> bool:
    """Whether `room` can name a recorded call (see `CALL_ROOM`)."""
    return CALL_ROOM.fullmatch(room) is not None


def call_key(room: str) -> str:
    return f"{PREFIX}call:{room}"


def events_key(room: str) -> str:
    return f"{PREFIX}call:{room}:events"


def accepted_key(room: str) -> str:
    """Set by an agent worker when it accepts the room's job (a worker is taking the call)."""
    return f"{PREFIX}call:{room}:accepted"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    try:
        return float(_text(value)) if value is not None else None
    except ValueError:
        return None


def _summary(room: str, fields: dict[str, str], is_open: bool) -> dict[str, Any]:
    return {
        "room": room,
        "participant_identity": fields.get("participant_identity"),
        "participant_name": fields.get("participant_name"),
        "started_at": _float(fields.get("started_at")),
        "ended_at": _float(fields.get("ended_at")),
        "end_reason": fields.get("end_reason"),
        "open": is_open,
        "jobs": int(fields.get("jobs", "0") or 0),
        **{name: fields[name] for name in PHONE_FIELDS if name in fields},
        **({"video_frames": int(fields["video_frames"] or 0)} if "video_frames" in fields else {}),
        **({"agent_state": fields["agent_state"]} if is_open and fields.get("agent_state") else {}),
    }


def load_session(redis: Any, room: str) -> dict[str, Any] | None:
    """One call's record: summary, turns, tool calls, model usage and lifecycle events.

    Returns:
        None when there is no record of `room`; else
        `{room, participant_identity, participant_name, started_at, ended_at, end_reason, open,
        jobs [, phone_number, sip_call_id, direction] [, video_frames] [, agent_state: open calls],
        turns: [{at, role, text, interrupted, response_s?, sources?}], tool_calls: [{at, call_id,
        name, arguments, output, is_error}], usage: {input_tokens, input_image_tokens,
        output_tokens, total_tokens, responses}, events: [{at, event, ...}]}` (times: Unix s).
    """
    raw = redis.hgetall(call_key(room))
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    record = _summary(room, fields, bool(redis.sismember(OPEN_CALLS, room)))
    turns: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    usage = {"input_tokens": 0, "input_image_tokens": 0, "output_tokens": 0, "total_tokens": 0, "responses": 0}
    seen: set[tuple[str, str]] = set()
    response_s: float | None = None  # the next reply's response time (written as it starts)
    for _entry_id, raw_entry in redis.xrange(events_key(room)):
        entry = {_text(k): _text(v) for k, v in raw_entry.items()}
        key = (entry.get("job", ""), entry.get("seq", ""))
        if key in seen:  # a write retried after a lost reply
            continue
        seen.add(key)
        try:
            data = json.loads(entry.get("data") or "{}")
        except json.JSONDecodeError:
            continue
        at = _float(entry.get("at"))
        kind = entry.get("type")
        if kind == "turn":
            turns.append({"at": at, "role": data.get("role"), "text": data.get("text", ""),
                          "interrupted": bool(data.get("interrupted"))})
            if data.get("role") == "assistant" and response_s is not None:
                turns[-1]["response_s"], response_s = response_s, None
        elif kind == "response":
            response_s = _float(data.get("seconds"))
        elif kind == "sources":  # the knowledge sources of the reply just recorded
            if turns and turns[-1]["role"] == "assistant":
                turns[-1]["sources"] = list(data.get("sources") or [])
        elif kind == "tool":
            tools.append({"at": at, **{k: data.get(k) for k in ("call_id", "name", "arguments", "output", "is_error")}})
        elif kind == "usage":
            usage["responses"] += 1
            for name in ("input_tokens", "input_image_tokens", "output_tokens", "total_tokens"):
                usage[name] += int(data.get(name) or 0)
        else:
            events.append({"at": at, **data})
    record.update(turns=turns, tool_calls=tools, usage=usage, events=events)
    return record


def list_sessions(redis: Any, *, limit: int = 50, before: float | None = None) -> list[dict[str, Any]]:
    """Summaries of the most recent calls, newest first.

    Args:
        limit: at most this many (1-500).
        before: only calls that started before this Unix time (paging).
    """
    limit = max(1, min(limit, 500))
    high = f"({before}" if before is not None else "+inf"
    rooms = [_text(r) for r in redis.zrevrangebyscore(CALLS, high, "-inf", start=0, num=limit)]
    open_rooms = {_text(r) for r in redis.smembers(OPEN_CALLS)}
    out = []
    for room in rooms:
        raw = redis.hgetall(call_key(room))
        if raw:
            out.append(_summary(room, {_text(k): _text(v) for k, v in raw.items()}, room in open_rooms))
    return out
