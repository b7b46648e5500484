"""Call records in Redis, written by the agent as the call goes (not at the end).

The format (keys, fields, event types, the ``(job, seq)`` rule) is `voice_calls.records`,
shared with the token server, which reads the records back; this module writes them.

Retention (`Retention`): a call's keys expire `days` after it ended (open calls get the
same plus a day, in case no job ever closes them), the listing drops calls older than
that at each new call, and one call's stream keeps at most `max_events` events.

Redis runs with append-only persistence, so what was written survives a restart. Writes
go through an in-memory queue drained in order by one task that retries while Redis is
away, or refuses writes for a while (``READONLY`` replica, ``OOM`` maxmemory reached,
``MISCONF`` a failing disk, ``LOADING``), so none of those loses anything either (up to
`max_pending` events are held). While writes fail the job logs an error and counts them
(`voice_agent_record_write_failures_total`, see README "Reliability").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from voice_calls import responses
from voice_calls.records import (
    CALLS,
    LIFECYCLE,
    OPEN_CALLS,
    RESPONSE,
    TOOL,
    TURN,
    USAGE,
    Sequence,
    call_key,
    end_fields,
    event_fields,
    events_key,
    spoken_at,
    unique_events,
)

logger = logging.getLogger("voice_agent.records")

#: Refusals that last only a while (a replica not yet promoted, memory full, a failing disk,
#: a busy script): the write is retried, not dropped. redis-py raises its own classes for
#: some (with the code cut from the message); the others are plain errors named by the code.
_REFUSAL_CLASSES: tuple[tuple[type[RedisError], str], ...] = (
    (ReadOnlyError, "READONLY"), (OutOfMemoryError, "OOM"), (MasterDownError, "MASTERDOWN"),
    (TryAgainError, "TRYAGAIN"),
)
_REFUSAL_CODES = frozenset({"MISCONF", "BUSY", "NOREPLICAS", "LOADING"})

WRITE_FAILURES = Counter(
    "voice_agent_record_write_failures",
    "Call-record writes that Redis refused or could not take, by error (each retry counts).",
    ["error"],
)

def connect(url: str, client_name: str | None = None, *, retry: bool = True) -> aioredis.Redis:
    """An asyncio Redis client that reconnects by itself (short timeouts, no hanging call).

    Args:
        client_name: ``CLIENT SETNAME`` of every connection it opens (see `claims`).
        retry: retry a command that met a connection error, with backoff (redis-py's default:
            3 times, 1 s, 2 s, 4 s, so an outage that short is never seen). False: fail at once,
            for a caller that must know Redis was away (the watchdog's hold-off).
    """
    extra = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
        retry_on_timeout=False,
        client_name=client_name,
        **extra,
    )


@dataclass(frozen=True)
class Retention:
    """How long call records are kept and how large one may grow.

    Attributes:
        days: a call's keys expire this long after it ended (`RECORDS_RETENTION_DAYS`).
        max_events: events kept per call, oldest trimmed first (`RECORDS_MAX_EVENTS_PER_CALL`).
    """

    days: float = 30.0
    max_events: int = 10_000

    @property
    def seconds(self) -> int:
        return max(1, int(self.days * 86_400))


def _refusal(exc: RedisError) -> str | None:
    """The error code of a refusal worth retrying (``OOM`` ...), else None."""
    for cls, code in _REFUSAL_CLASSES:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, ResponseError):
        code = str(exc).split(" ", 1)[0].upper()
        return code if code in _REFUSAL_CODES else None
    return None


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
        retention: how long the record is kept, and its size limit.
    """

    def __init__(
        self, redis: aioredis.Redis, room: str, job_id: str, *, max_pending: int = 10_000,
        retention: Retention = Retention(),
    ) -> None:
        self.redis = redis
        self.room = room
        self.job_id = job_id
        self.retention = retention
        self._failing_since: float | None = None
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._seq = Sequence()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._ended = False

    # ---- reading ---------------------------------------------------------------------

    async def load_turns(self) -> list[Turn]:
        """The call's turns so far (an earlier job's), oldest first; [] if none or Redis is away."""
        try:
            entries = await self.redis.xrange(events_key(self.room))
        except RedisError as exc:
            logger.warning("could not read the transcript of %s: %s", self.room, exc)
            return []
        turns = sorted((event for event in unique_events(entries) if event.type == TURN and event.data.get("text")),
                       key=spoken_at)  # in the order they were spoken (voice_calls.records.spoken_at)
        return [Turn(event.data.get("role", "user"), event.data["text"]) for event in turns]

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
        self._queue("zremrangebyscore", (CALLS, "-inf", now - self.retention.seconds))
        self.event(LIFECYCLE, {"event": "job_started"})
        self._expire(self.retention.seconds + 86_400)  # closed (and expired sooner) by `end`
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

    def set_agent_state(self, state: str) -> None:
        """The agent session's state now (livekit-agents' AgentState: listening, speaking ...)."""
        self._queue("hset", (call_key(self.room), "agent_state", state))

    def count_video_frame(self) -> None:
        """One more camera or screen-share frame went to the model (`video_frames`)."""
        self._queue("hincrby", (call_key(self.room), "video_frames", 1))

    def event(self, kind: str, data: dict[str, Any], *, at: float | None = None) -> None:
        """Append an event (turn, tool, usage, lifecycle)."""
        self._queue("xadd", (events_key(self.room), event_fields(kind, data, job=self.job_id, seq=self._seq, at=at)),
                    {"maxlen": self.retention.max_events, "approximate": True})

    def record_response(self, seconds: float) -> None:
        """A turn's response time (s), as its reply starts: in the call's events and in the
        stream of all calls' response times (`voice_calls.responses`, the console's chart)."""
        self.event(RESPONSE, {"seconds": round(seconds, 3)})
        self.write(responses.response_writes(self.room, seconds))

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
        self.event(LIFECYCLE, {"event": "call_ended", "reason": reason})
        self._queue("hset", (call_key(self.room),), {"mapping": end_fields(reason)})
        self._queue("srem", (OPEN_CALLS, self.room))
        self._expire(self.retention.seconds)

    def _expire(self, seconds: int) -> None:
        for key in (call_key(self.room), events_key(self.room)):
            self._queue("expire", (key, seconds))

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
                self._failing(type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except RedisError as exc:
                refusal = _refusal(exc)
                if refusal is not None:  # Redis takes no writes for now: keep the event, retry
                    self._failing(refusal, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                WRITE_FAILURES.labels(error="rejected").inc()
                logger.exception("record write %s failed; skipping it", op)
            if self._failing_since is not None:
                logger.warning("call records of %s written again after %.1f s", self.room,
                               time.monotonic() - self._failing_since)
                self._failing_since = None
            delay = 0.2
            self._pending.popleft()

    def _failing(self, error: str, exc: Exception) -> None:
        """A write failed and will be retried: alert once per outage, count every attempt."""
        WRITE_FAILURES.labels(error=error).inc()
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.error("call records cannot be written (%s); %d event(s) of %s held in memory, retrying",
                         exc, len(self._pending), self.room)


def record_session(session: Any, recorder: CallRecorder) -> None:
    """Write an AgentSession's turns, tool calls and model usage as they happen."""
    from livekit.agents import llm
    from livekit.agents.metrics import RealtimeModelMetrics

    @session.on("conversation_item_added")
    def _on_item(event: Any) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant") and item.text_content:
            recorder.event(
                TURN,
                {"role": item.role, "text": item.text_content, "interrupted": item.interrupted,
                 "started_at": item.created_at},
                at=event.created_at,
            )

    @session.on("agent_state_changed")
    def _on_state(event: Any) -> None:
        recorder.set_agent_state(str(event.new_state))

    @session.on("function_tools_executed")
    def _on_tools(event: Any) -> None:
        for call, output in zip(event.function_calls, event.function_call_outputs, strict=False):
            recorder.event(
                TOOL,
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
                USAGE,
                {"request_id": metrics.request_id, "input_tokens": metrics.input_tokens,
                 "output_tokens": metrics.output_tokens, "total_tokens": metrics.total_tokens,
                 "input_audio_tokens": metrics.input_token_details.audio_tokens,
                 "input_text_tokens": metrics.input_token_details.text_tokens,
                 "input_image_tokens": metrics.input_token_details.image_tokens,
                 "output_audio_tokens": metrics.output_token_details.audio_tokens,
                 "output_text_tokens": metrics.output_token_details.text_tokens},
                at=event.created_at,
            )
