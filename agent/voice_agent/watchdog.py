"""Hands a call whose agent died to a new job, quickly, without evicting a live one.

livekit-server v1.13.5 does not re-dispatch a job whose worker died: when a worker's
connection closes, `AgentHandler.deregisterWorker` forgets its jobs (`deregisterJob`:
"TODO update dispatch state", pkg/service/agentservice.go), and a room launches its
agents only when it is created, when a participant joins, or on `CreateDispatch`
(pkg/rtc/room.go). The dead agent's participant stays in the room until LiveKit times it
out (over 4 s, measured). So a worker killed mid-call leaves the caller alone.

Every worker runs this watchdog in its main process, from registration on. Every
`interval_s` it judges each open call (`voice:calls:open`) by its room claim (claims.py)
and by which jobs have a connection to Redis:

* claimed, and the holder's connections are there: alive;
* claimed, but the holder has no connection left for `confirm_s` (two rounds): its process
  died (a crash, SIGKILL, an OOM kill): hand the call over now, long before the claim expires;
* not claimed, and the last holder's connections are there: its event loop stalled (a
  busy box): leave it unless the claim stays missing for another claim TTL (then it is
  stuck, not slow). Without ``CLIENT LIST`` every missing claim is judged this way.

Handing over: ask LiveKit whether a caller is still in the room (none: close the record);
fence the old job out (`claims.hand_over` bumps the claim generation, so a stalled job that
wakes up cannot take the room back); remove its agent participant; create a dispatch with
the call's metadata; tell the caller (`notices.RECONNECTING`). A short Redis key makes one
watchdog of many do it. A dispatch that no worker took (none marked it accepted,
`accepted_key`) is retried after `retry_s` (a worker may be restarting). A call
is handed over at most `max_redispatches` times; after that the caller is told
(`notices.UNAVAILABLE`) and the room closed. The new job picks the conversation up from
the record (server.py).

A Redis restart (or outage) drops every connection and may let claims expire; their
holders reconnect and take them again at their next refresh. So after a round that
failed, the watchdog holds off for `hold_off_s` of reachable Redis before it judges again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from livekit import api

from voice_calls.records import (
    LIFECYCLE,
    OPEN_CALLS,
    WATCHDOG_WRITER,
    Sequence,
    accepted_key,
    agent_key,
    call_key,
    end_fields,
    event_fields,
    events_key,
    redispatch_key,
)

from . import claims, notices, records

logger = logging.getLogger("voice_agent.watchdog")


@dataclass
class _Suspect:
    """A call whose agent looks dead: how (`gone` process, `stalled` loop), and since when."""

    kind: str
    since: float


class CallWatchdog:
    """Re-dispatches open calls whose agent died (see the module docstring).

    Args:
        interval_s: one round every this many seconds.
        claim_ttl_s: the room claim's lifetime (`AGENT_ROOM_CLAIM_TTL_S`).
        confirm_s: a holder without connections this long is dead (more than a refresh).
        retry_s: a dispatch no worker took is repeated after this long.
        start_timeout_s: a job a worker took has this long to claim the room before the call
            counts as lost again (a job process may be slow to start on a busy box).
        hold_off_s: after a failed round, wait this long (default: `claim_ttl_s`).
        retention_s: a call closed here is kept this long (`records.Retention`).
    """

    def __init__(
        self,
        *,
        redis_url: str,
        livekit_url: str,
        api_key: str,
        api_secret: str,
        agent_name: str,
        interval_s: float = 0.5,
        max_redispatches: int = 3,
        claim_ttl_s: float = 10.0,
        confirm_s: float = 1.5,
        retry_s: float = 2.0,
        start_timeout_s: float = 60.0,
        hold_off_s: float | None = None,
        retention_s: int = 30 * 86_400,
    ) -> None:
        self._redis_url = redis_url
        self._livekit = (livekit_url, api_key, api_secret)
        self._agent_name = agent_name
        self._interval_s = interval_s
        self._max = max_redispatches
        self._claim_ttl_s = claim_ttl_s
        self._confirm_s = confirm_s
        self._retry_s = retry_s
        self._start_timeout_s = start_timeout_s
        self._hold_off_s = claim_ttl_s if hold_off_s is None else hold_off_s
        self._suspects: dict[str, _Suspect] = {}
        self._retention_s = retention_s
        self._seq = Sequence.from_clock()

    async def run(self) -> None:
        """Check every `interval_s` until cancelled; errors are logged, never fatal."""
        # No silent retries: a round during an outage must fail, so the hold-off starts.
        redis = records.connect(self._redis_url, retry=False)
        lk = api.LiveKitAPI(*self._livekit)
        quiet_until = 0.0  # after a failed round: only ping Redis until then
        try:
            while True:
                try:
                    if time.monotonic() < quiet_until:
                        await redis.ping()
                    else:
                        await self.check_once(redis, lk)
                except Exception as exc:  # Redis or LiveKit away: hold off, try again later
                    if time.monotonic() >= quiet_until:
                        logger.info("watchdog round failed (%s); holding off %.0f s", exc, self._hold_off_s)
                    quiet_until = time.monotonic() + self._hold_off_s
                    self._suspects.clear()
                await asyncio.sleep(self._interval_s)
        finally:
            await lk.aclose()
            await redis.aclose()

    async def check_once(self, redis: records.aioredis.Redis, lk: api.LiveKitAPI) -> list[str]:
        """One round; returns the rooms dispatched again."""
        rooms = await redis.smembers(OPEN_CALLS)
        self._suspects = {room: s for room, s in self._suspects.items() if room in rooms}
        if not rooms:
            return []
        alive = await claims.live_jobs(redis)
        dispatched = []
        for room in rooms:
            holder = await redis.get(agent_key(room))
            if await self._pending_dispatch(redis, lk, room, holder):
                continue
            suspect = await self._judge(redis, room, holder, alive)
            if suspect is not None and await self._hand_over(redis, lk, room, holder, suspect):
                dispatched.append(room)
        return dispatched

    async def _judge(
        self, redis: records.aioredis.Redis, room: str, holder: str | None, alive: set[str] | None
    ) -> _Suspect | None:
        """The suspicion once it is confirmed (the agent is dead), else None."""
        job = claims.holder_job(holder) or await redis.hget(call_key(room), claims.JOB_FIELD)
        connected = alive is None or (job is not None and job in alive)
        if holder and connected:
            self._suspects.pop(room, None)
            return None
        kind = "gone" if not connected else "stalled"
        now = time.monotonic()
        suspect = self._suspects.get(room)
        if suspect is None or suspect.kind != kind:
            suspect = self._suspects[room] = _Suspect(kind, now)
            if kind == "stalled":
                logger.warning("room %s: the claim of job %s lapsed but it is still connected (a stalled "
                               "event loop?); waiting %.0f s more", room, job, self._claim_ttl_s)
        wait_s = self._confirm_s if kind == "gone" else self._claim_ttl_s
        return suspect if now - suspect.since >= wait_s else None

    async def _pending_dispatch(
        self, redis: records.aioredis.Redis, lk: api.LiveKitAPI, room: str, holder: str | None
    ) -> bool:
        """True while a dispatch made for `room` is still on its way (nothing else to do);
        repeats it when no worker took it within `retry_s`."""
        raw = await redis.get(redispatch_key(room))
        if raw is None:
            return False
        if holder is not None:  # the new job has the room: the hand-over is done
            await redis.delete(redispatch_key(room))
            return False
        pending = json.loads(raw) if raw.startswith("{") else {}
        waited_s = time.time() - float(pending.get("at", 0))
        if waited_s < self._retry_s:
            return True
        if await redis.exists(accepted_key(room)):
            if waited_s < self._start_timeout_s:
                return True  # a worker took it: its job is starting
            await redis.delete(redispatch_key(room))  # it never came: hand over again
            return False
        metadata = await redis.hget(call_key(room), "metadata") or ""
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(room=room, agent_name=self._agent_name, metadata=metadata))
        await self._mark_dispatched(redis, room, dispatch.id)
        logger.warning("room %s: no worker took the new dispatch yet; dispatched again", room)
        return True

    async def _hand_over(
        self, redis: records.aioredis.Redis, lk: api.LiveKitAPI, room: str, holder: str | None, suspect: _Suspect
    ) -> bool:
        try:
            listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            participants = list(listing.participants)
        except api.TwirpError as exc:
            if exc.code != "not_found":
                raise
            participants = []
        if not any(p.kind != api.ParticipantInfo.Kind.AGENT for p in participants):
            await self._close(redis, room, "caller gone")
            return False
        guard_ms = int(self._start_timeout_s * 1000) + 5_000
        if not await redis.set(redispatch_key(room), "{}", nx=True, px=guard_ms):
            return False  # another watchdog (or an earlier round) is handing it over just now
        count = await redis.hincrby(call_key(room), "redispatches", 1)
        if count > self._max:
            await self._close(redis, room, "agent lost too often")
            await notices.send(lk, room, notices.UNAVAILABLE)
            return False
        generation = await claims.hand_over(redis, room, holder)
        if generation is None:  # a job claimed the room meanwhile: it is not lost after all
            await redis.delete(redispatch_key(room))
            return False
        self._suspects.pop(room, None)
        for ghost in (p for p in participants if p.kind == api.ParticipantInfo.Kind.AGENT):
            # The dead job's participant lingers until LiveKit times it out: remove it now.
            try:
                await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=ghost.identity))
            except api.TwirpError:
                pass
        metadata = await redis.hget(call_key(room), "metadata") or ""
        await redis.delete(accepted_key(room))  # set again by the worker that takes it
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(room=room, agent_name=self._agent_name, metadata=metadata))
        await self._mark_dispatched(redis, room, dispatch.id)
        await self._event(redis, room, {"event": "redispatched", "attempt": count, "why": suspect.kind,
                                        "generation": generation})
        logger.warning("the agent of room %s is %s; dispatched a new one (%d)",
                       room, "gone" if suspect.kind == "gone" else "stuck", count)
        try:
            await notices.send(lk, room, notices.RECONNECTING)
        except api.TwirpError as exc:
            logger.info("could not tell the caller of room %s: %s", room, exc)
        return True

    async def _mark_dispatched(self, redis: records.aioredis.Redis, room: str, dispatch_id: str) -> None:
        value = json.dumps({"dispatch": dispatch_id, "at": time.time()})
        await redis.set(redispatch_key(room), value, px=int(self._start_timeout_s * 1000) + 5_000)

    async def _close(self, redis: records.aioredis.Redis, room: str, reason: str) -> None:
        await self._event(redis, room, {"event": "call_ended", "reason": reason})
        await redis.hset(call_key(room), mapping=end_fields(reason))
        await redis.srem(OPEN_CALLS, room)
        for key in (call_key(room), events_key(room)):
            await redis.expire(key, self._retention_s)
        self._suspects.pop(room, None)
        logger.info("call in room %s closed: %s", room, reason)

    async def _event(self, redis: records.aioredis.Redis, room: str, data: dict[str, object]) -> None:
        await redis.xadd(events_key(room), event_fields(LIFECYCLE, data, job=WATCHDOG_WRITER, seq=self._seq))
