"""Call records in Redis: the one definition of their keys, events and reading.

The agent writes a call's record as the call goes (`voice_agent.records.CallRecorder`,
and the watchdog when it hands a call over or closes it); the token server reads it
(``GET /api/calls``). Both use this module, so the format is spelled once:

    voice:call:{room}            HASH    room, participant_identity, participant_name, metadata,
                                         started_at, ended_at, end_reason, jobs, redispatches,
                                         agent_generation, agent_job
                                         (times: Unix seconds as decimal strings); phone
                                         calls add phone_number, sip_call_id, direction
                                         (inbound | outbound); calls the caller showed
                                         video in add video_frames (frames sent to the model);
                                         agent_state: the session's last state (listening,
                                         thinking, speaking ...)
    voice:call:{room}:events     STREAM  one entry per event (`event_fields`), fields:
                                         type  turn | tool | usage | lifecycle | sources | response
                                         at    Unix seconds
                                         job   the writer: the job's id, or ``watchdog``
                                         seq   the writer's sequence number (`Sequence`)
                                         data  JSON: turn {role, text, interrupted, started_at}
                                               tool {call_id, name, arguments, output, is_error}
                                               usage {input_tokens, output_tokens, total_tokens,
                                                      input_image_tokens, ...}
                                               lifecycle {event, ...}
                                               sources {sources: [citation]}: the knowledge
                                                 a reply used; follows that reply's turn
                                               response {seconds}: the caller's speech to the
                                                 next reply's first audio (written as that
                                                 reply starts, before its turn)
    voice:calls                  ZSET    room -> started_at (listing, newest first)
    voice:calls:open             SET     rooms whose call has not ended (the watchdog's work list)
    voice:call:{room}:accepted   STRING  the job a worker accepted for the room, set when it
                                         accepts (before the job process starts; expires in
                                         10 min): a worker is taking the call
    voice:call:{room}:agent      STRING  "{generation}:{job}" holding the room (one agent per
                                         room); expires unless its holder refreshes it. The
                                         hash's agent_generation and agent_job go with it
                                         (`voice_agent.claims` owns all three)
    voice:call:{room}:redispatch STRING  the watchdog's hand-over in progress (JSON)

The duplicate rule: a write retried after a lost reply may land twice, so an event is
named by its ``(job, seq)`` and readers keep the first of each (`unique_events`).

`load_call(redis, room)` and `list_calls(redis, ...)` take a synchronous `redis.Redis`
(either `decode_responses` setting) and return plain JSON-ready dicts; the HTTP API that
exposes them must sit behind the token server's authentication. This module imports no
Redis client: it is shared by services that bring their own.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "voice:"
#: ZSET room -> started_at: every recorded call, for the listing.
CALLS = f"{PREFIX}calls"
#: SET of rooms whose call has not ended.
OPEN_CALLS = f"{PREFIX}calls:open"

#: Event types (the stream's ``type`` field).
TURN = "turn"
TOOL = "tool"
USAGE = "usage"
LIFECYCLE = "lifecycle"
SOURCES = "sources"
RESPONSE = "response"

#: The ``job`` of events the watchdog writes (it runs in every worker, not in a job).
WATCHDOG_WRITER = "watchdog"

#: Summary fields only phone calls have.
PHONE_FIELDS = ("phone_number", "sip_call_id", "direction")

#: Room names a call can have: the token server's ``room-...``, telephony's ``call-_+1555..._...``
#: and ``call-out-...``; never ``:`` (the key separator), so a name cannot reach another key.
CALL_ROOM = re.compile(r"[A-Za-z0-9_.+=@-]{1,256}")


def is_call_room(room: str) -> bool:
    """Whether `room` can name a recorded call (see `CALL_ROOM`)."""
    return CALL_ROOM.fullmatch(room) is not None


def call_key(room: str) -> str:
    """The call's summary HASH."""
    return f"{PREFIX}call:{room}"


def events_key(room: str) -> str:
    """The call's event STREAM."""
    return f"{PREFIX}call:{room}:events"


def agent_key(room: str) -> str:
    """The room claim: ``"{generation}:{job}"`` of the agent holding the room."""
    return f"{PREFIX}call:{room}:agent"


def redispatch_key(room: str) -> str:
    """The watchdog's hand-over of the room in progress."""
    return f"{PREFIX}call:{room}:redispatch"


def accepted_key(room: str) -> str:
    """Set by an agent worker when it accepts the room's job (a worker is taking the call)."""
    return f"{PREFIX}call:{room}:accepted"


class Sequence:
    """Numbers one writer's events: ``seq`` counts up by one from `start`.

    ``(job, seq)`` must name one event. A job is one writer and starts at 0 (its first event
    is 1). The watchdogs of all workers write as `WATCHDOG_WRITER`, so each starts at the
    clock (ns) when it was made, far apart from any other's numbers.
    """

    def __init__(self, start: int = 0) -> None:
        self._next = itertools.count(start + 1)

    @classmethod
    def from_clock(cls) -> Sequence:
        """A sequence for a writer that shares its name with others (the watchdog)."""
        return cls(time.time_ns())

    def __next__(self) -> str:
        return str(next(self._next))


def event_fields(kind: str, data: Mapping[str, Any], *, job: str, seq: Sequence,
                 at: float | None = None) -> dict[str, str]:
    """One stream entry's fields (see the module docstring).

    Args:
        kind: `TURN`, `TOOL`, `USAGE`, `LIFECYCLE`, `SOURCES` or `RESPONSE`.
        data: the event's JSON-ready payload (other values become strings).
        job: the writer (a job id, or `WATCHDOG_WRITER`).
        seq: the writer's sequence; advanced by one.
        at: when it happened, Unix seconds (default: now).
    """
    return {
        "type": kind,
        "at": f"{at if at is not None else time.time():.3f}",
        "job": job,
        "seq": next(seq),
        "data": json.dumps(data, ensure_ascii=False, default=str),
    }


def end_fields(reason: str) -> dict[str, str]:
    """The summary fields that close a call (``ended_at`` now, ``end_reason``)."""
    return {"ended_at": f"{time.time():.3f}", "end_reason": reason}


@dataclass(frozen=True)
class Event:
    """One event read back: its `type` (`TURN` ...), `at` (Unix seconds, None if
    unreadable) and `data` (the decoded JSON)."""

    type: str | None
    at: float | None
    data: dict[str, Any]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    try:
        return float(_text(value)) if value is not None else None
    except ValueError:
        return None


def unique_events(entries: Iterable[tuple[Any, Mapping[Any, Any]]]) -> Iterator[Event]:
    """The events of `XRANGE` entries, oldest first, each once: a repeated ``(job, seq)`` (a
    write retried after a lost reply) and an entry whose data is not JSON are skipped.
    Keys and values may be `str` or `bytes`."""
    seen: set[tuple[str, str]] = set()
    for _entry_id, raw in entries:
        entry = {_text(k): _text(v) for k, v in raw.items()}
        key = (entry.get("job", ""), entry.get("seq", ""))
        if key in seen:
            continue
        seen.add(key)
        try:
            data = json.loads(entry.get("data") or "{}")
        except json.JSONDecodeError:
            continue
        yield Event(entry.get("type"), _float(entry.get("at")), data if isinstance(data, dict) else {})


def summary(room: str, raw: Mapping[Any, Any], is_open: bool) -> dict[str, Any]:
    """A call's summary from its HASH: ``{room, participant_identity, participant_name,
    started_at, ended_at, end_reason, open, jobs [, phone_number, sip_call_id, direction]
    [, video_frames] [, agent_state: open calls]}`` (times: Unix seconds)."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
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


def load_call(redis: Any, room: str) -> dict[str, Any] | None:
    """One call's record: summary, turns, tool calls, model usage and lifecycle events.

    Returns:
        None when there is no record of `room`; else the `summary` plus ``turns: [{at, role,
        text, interrupted, response_s?, sources?}], tool_calls: [{at, call_id, name, arguments, output,
        is_error}], usage: {input_tokens, input_image_tokens, output_tokens, total_tokens,
        responses}, events: [{at, event, ...}]`` (times: Unix seconds).
    """
    raw = redis.hgetall(call_key(room))
    if not raw:
        return None
    record = summary(room, raw, bool(redis.sismember(OPEN_CALLS, room)))
    turns: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    usage = {"input_tokens": 0, "input_image_tokens": 0, "output_tokens": 0, "total_tokens": 0, "responses": 0}
    response_s: float | None = None  # the next reply's response time (written as it starts)
    for event in unique_events(redis.xrange(events_key(room))):
        data, at = event.data, event.at
        if event.type == TURN:
            turns.append({"at": at, "role": data.get("role"), "text": data.get("text", ""),
                          "interrupted": bool(data.get("interrupted")), "_spoken_at": spoken_at(event)})
            if data.get("role") == "assistant" and response_s is not None:
                turns[-1]["response_s"], response_s = response_s, None
        elif event.type == RESPONSE:
            response_s = _float(data.get("seconds"))
        elif event.type == SOURCES:  # the knowledge sources of the reply just recorded
            if turns and turns[-1]["role"] == "assistant":
                turns[-1]["sources"] = list(data.get("sources") or [])
        elif event.type == TOOL:
            tools.append({"at": at, **{k: data.get(k) for k in ("call_id", "name", "arguments", "output", "is_error")}})
        elif event.type == USAGE:
            usage["responses"] += 1
            for name in ("input_tokens", "input_image_tokens", "output_tokens", "total_tokens"):
                usage[name] += int(data.get(name) or 0)
        else:
            events.append({"at": at, **data})
    turns.sort(key=lambda turn: turn.pop("_spoken_at"))  # stable: arrival order among equals
    record.update(turns=turns, tool_calls=tools, usage=usage, events=events)
    return record


def spoken_at(event: Event) -> float:
    """When a turn event's words were spoken, Unix seconds: its item's ``started_at`` (a
    caller's turn: when the model's turn began), else when it was written. Gemini may send a
    caller's final transcript after the reply it prompted; livekit-agents dates that message
    at the turn's start (``ChatMessage.created_at``), and so do these records' readers."""
    started = _float(event.data.get("started_at"))
    return started if started is not None else (event.at or 0.0)


def list_calls(redis: Any, *, limit: int = 50, before: float | None = None) -> list[dict[str, Any]]:
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
            out.append(summary(room, raw, room in open_rooms))
    return out
