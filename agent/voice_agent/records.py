"""Call records in Redis, written by the agent as the call goes (not at the end).

Schema (the token server reads it with `token_server.records`; keep the two in step):

    voice:call:{room}            HASH    room, participant_identity, participant_name, metadata,
                                         started_at, ended_at, end_reason, jobs, redispatches
                                         (times: Unix seconds as decimal strings); phone
                                         calls add phone_number, sip_call_id, direction
                                         (inbound | outbound); calls the caller showed
                                         video in add video_frames (frames sent to the model)
    voice:call:{room}:events     STREAM  one entry per event, fields:
                                         type  turn | tool | usage | lifecycle | sources
                                         at    Unix seconds
                                         job   the job that wrote it
                                         seq   per-job sequence number (a write retried
                                               after a lost reply may land twice;
                                               readers drop repeated (job, seq))
                                         data  JSON: turn {role, text, interrupted, started_at}
                                               tool {call_id, name, arguments, output, is_error}
                                               usage {input_tokens, output_tokens, total_tokens,
                                                      input_image_tokens, ...}
                                               lifecycle {event, ...}
                                               sources {sources: [citation]}: the knowledge
                                                 a reply used; follows that reply's turn
    voice:calls                  ZSET    room -> started_at (listing, newest first)
    voice:calls:open             SET     rooms whose call has not ended (the watchdog's work list)
    voice:call:{room}:agent      STRING  the job that holds the room (one agent per room);
                                         expires unless its holder refreshes it

Redis runs with append-only persistence, so what was written survives a restart. Writes
go through an in-memory queue drained in order by one task that retries while Redis is
away, so a Redis restart loses nothing either (up to `max_pending` events are held).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("voice_agent.records")

PREFIX = "voice:"
CALLS = f"{PREFIX}calls"
OPEN_CALLS = f"{PREFIX}calls:open"


def call_key(room: str) -> str:
    return f"{PREFIX}call:{room}"


def events_key(room: str) -> str:
    return f"{PREFIX}call:{room}:events"


def agent_key(room: str) -> str:
    return f"{PREFIX}call:{room}:agent"


def redispatch_key(room: str) -> str:
    return f"{PREFIX}call:{room}:redispatch"


# Refresh the holder key if we still hold it, or take it again if nobody does (it expired
# while Redis was away or restarting); delete it only if we hold it.
_REFRESH = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client that reconnects by itself (short timeouts, no hanging call)."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
        retry_on_timeout=False,
    )


@dataclass(frozen=True)
class Turn:
    """A finished turn from the record: who said what."""

    role: str
    text: str


class CallRecorder:
    """Writes one call's record for one job.

    Args:
        redis: the client (see `connect`).
        room: the LiveKit room name (one call per room).
        job_id: the job writing (several jobs can serve one call: after a crash or a drain).
        max_pending: events held in memory while Redis is away; older ones are dropped.
    """

    def __init__(self, redis: aioredis.Redis, room: str, job_id: str, *, max_pending: int = 10_000) -> None:
        self.redis = redis
        self.room = room
        self.job_id = job_id
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._ended = False

    # ---- holding the room (one agent per room) ----------------------------------------

    async def claim(self, ttl_ms: int) -> bool | None:
        """Try to become the room's agent. True: ours; False: another live job has it;
        None: Redis unreachable (the caller decides; we serve rather than leave)."""
        try:
            return bool(await self.redis.set(agent_key(self.room), self.job_id, nx=True, px=ttl_ms))
        except RedisError as exc:
            logger.warning("cannot check who holds room %s (Redis: %s); serving the call", self.room, exc)
            return None

    async def refresh(self, ttl_ms: int) -> bool:
        """Keep holding the room (taking it again if the key is gone: Redis was away longer
        than the claim lives); False if another job holds it."""
        try:
            return bool(await self.redis.eval(_REFRESH, 1, agent_key(self.room), self.job_id, ttl_ms))
        except RedisError:
            return True  # Redis away: keep serving; the key is set again when it is back

    async def release(self) -> None:
        try:
            await self.redis.eval(_RELEASE, 1, agent_key(self.room), self.job_id)
        except RedisError as exc:
            logger.warning("could not release room %s: %s", self.room, exc)

    # ---- reading ---------------------------------------------------------------------

    async def load_turns(self) -> list[Turn]:
        """The call's turns so far (an earlier job's), oldest first; [] if none or Redis is away."""
        try:
            entries = await self.redis.xrange(events_key(self.room))
        except RedisError as exc:
            logger.warning("could not read the transcript of %s: %s", self.room, exc)
            return []
        turns, seen = [], set()
        for _id, fields in entries:
            key = (fields.get("job"), fields.get("seq"))
            if fields.get("type") != "turn" or key in seen:
                continue
            seen.add(key)
            data = json.loads(fields.get("data") or "{}")
            if data.get("text"):
                turns.append(Turn(data.get("role", "user"), data["text"]))
        return turns

    async def call_info(self) -> dict[str, str]:
        try:
            return dict(await self.redis.hgetall(call_key(self.room)))
        except RedisError:
            return {}

    # ---- writing (queued, in order, retried) ------------------------------------------

    def start(self, *, participant_identity: str | None, participant_name: str | None, metadata: str) -> None:
        """Open (or rejoin) the call record and start the writer task."""
        now = round(time.time(), 3)  # the listing's score is the record's started_at, exactly
        fields = {"room": self.room, "metadata": metadata, "last_job": self.job_id}
        if participant_identity:
            fields["participant_identity"] = participant_identity
        if participant_name:
            fields["participant_name"] = participant_name
        self._queue("hsetnx", (call_key(self.room), "started_at", f"{now:.3f}"))
        self._queue("hset", (call_key(self.room),), {"mapping": fields})
        self._queue("hincrby", (call_key(self.room), "jobs", 1))
        self._queue("zadd_nx", (CALLS, self.room, now))
        self._queue("sadd", (OPEN_CALLS, self.room))
        self.event("lifecycle", {"event": "job_started"})
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="call-recorder")

    def set_participant(self, identity: str, name: str | None) -> None:
        fields = {"participant_identity": identity}
        if name:
            fields["participant_name"] = name
        self._queue("hset", (call_key(self.room),), {"mapping": fields})

    def set_phone(self, *, phone_number: str, sip_call_id: str, direction: str) -> None:
        """Mark the call as a phone call: the other party's number, the SIP call id, and
        who called (`inbound`: they called us)."""
        fields = {"phone_number": phone_number, "sip_call_id": sip_call_id, "direction": direction}
        self._queue("hset", (call_key(self.room),), {"mapping": fields})

    def count_video_frame(self) -> None:
        """One more camera or screen-share frame went to the model (`video_frames`)."""
        self._queue("hincrby", (call_key(self.room), "video_frames", 1))

    def event(self, kind: str, data: dict[str, Any], *, at: float | None = None) -> None:
        """Append an event (turn, tool, usage, lifecycle)."""
        self._seq += 1
        fields = {
            "type": kind,
            "at": f"{at if at is not None else time.time():.3f}",
            "job": self.job_id,
            "seq": str(self._seq),
            "data": json.dumps(data, ensure_ascii=False, default=str),
        }
        self._queue("xadd", (events_key(self.room), fields))

    def write(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Queue other writes (`(command, args)`, e.g. `voice_calls.budget`'s totals) in order
        with the record's, with the same retries while Redis is away."""
        for op, args in writes:
            self._queue(op, args)

    def end(self, reason: str) -> None:
        """The call is over (the caller left, or it cannot go on): close the record. Only the
        first reason counts (the agent hangs up, then the caller's line drops)."""
        if self._ended:
            return
        self._ended = True
        self.event("lifecycle", {"event": "call_ended", "reason": reason})
        self._queue("hset", (call_key(self.room),), {"mapping": {"ended_at": f"{time.time():.3f}", "end_reason": reason}})
        self._queue("srem", (OPEN_CALLS, self.room))

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is written; False on timeout (Redis still away)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        if not await self.flush(timeout):
            logger.error("Redis unreachable: %d record event(s) of %s not written", len(self._pending), self.room)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _queue(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
        if len(self._pending) == self._pending.maxlen:
            logger.error("record queue of %s full: dropping the oldest event", self.room)
        self._pending.append((op, (args, kwargs or {})))
        self._idle.clear()
        self._wake.set()

    async def _apply(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if op == "zadd_nx":
            key, member, score = args
            await self.redis.zadd(key, {member: score}, nx=True)
        else:
            await getattr(self.redis, op)(*args, **kwargs)

    async def _writer(self) -> None:
        delay = 0.2
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            op, (args, kwargs) = self._pending[0]
            try:
                await self._apply(op, args, kwargs)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("Redis unavailable (%s); %d record event(s) waiting", exc, len(self._pending))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except RedisError:
                logger.exception("record write %s failed; skipping it", op)
            delay = 0.2
            self._pending.popleft()


def record_session(session: Any, recorder: CallRecorder) -> None:
    """Write an AgentSession's turns, tool calls and model usage as they happen."""
    from livekit.agents import llm
    from livekit.agents.metrics import RealtimeModelMetrics

    @session.on("conversation_item_added")
    def _on_item(event: Any) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant") and item.text_content:
            recorder.event(
                "turn",
                {"role": item.role, "text": item.text_content, "interrupted": item.interrupted,
                 "started_at": item.created_at},
                at=event.created_at,
            )

    @session.on("function_tools_executed")
    def _on_tools(event: Any) -> None:
        for call, output in zip(event.function_calls, event.function_call_outputs, strict=False):
            recorder.event(
                "tool",
                {"call_id": call.call_id, "name": call.name, "arguments": call.arguments,
                 "output": output.output if output is not None else None,
                 "is_error": bool(output.is_error) if output is not None else None},
                at=event.created_at,
            )

    @session.on("metrics_collected")
    def _on_metrics(event: Any) -> None:
        metrics = event.metrics
        if isinstance(metrics, RealtimeModelMetrics):
            recorder.event(
                "usage",
                {"request_id": metrics.request_id, "input_tokens": metrics.input_tokens,
                 "output_tokens": metrics.output_tokens, "total_tokens": metrics.total_tokens,
                 "input_audio_tokens": metrics.input_token_details.audio_tokens,
                 "input_text_tokens": metrics.input_token_details.text_tokens,
                 "input_image_tokens": metrics.input_token_details.image_tokens,
                 "output_audio_tokens": metrics.output_token_details.audio_tokens,
                 "output_text_tokens": metrics.output_token_details.text_tokens},
                at=event.created_at,
            )
