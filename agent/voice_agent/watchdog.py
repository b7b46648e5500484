"""Hands a call whose agent vanished to a new job.

livekit-server v1.13.5 does not re-dispatch a job whose worker died: when a worker's
connection closes, `AgentHandler.deregisterWorker` forgets its jobs (`deregisterJob`:
"TODO update dispatch state", pkg/service/agentservice.go), and a room launches its
agents only when it is created, when a participant joins, or on `CreateDispatch`
(pkg/rtc/room.go). So a worker killed mid-call leaves the caller alone in the room.

Every worker runs this watchdog (in its main process, from registration on). A job holds
its room in Redis (`voice:call:{room}:agent`, refreshed every `room_claim_ttl_s / 3`); when
a call is still open (`voice:calls:open`) but nobody holds its room, the watchdog asks
LiveKit whether the caller is still there: if so it removes the dead agent participant and
creates a new dispatch (with the original metadata), guarded by a short Redis key so that
several workers' watchdogs dispatch once; if not, it closes the record. The new job picks
the conversation up from the record (server.py). A call is handed over at most
`max_redispatches` times.

A Redis restart (or outage) longer than a claim lives lets the claims of live jobs expire;
their holders take them again at their next refresh once Redis is back. So after a round
that failed, the watchdog holds off for `hold_off_s` (the claim's lifetime) of reachable
Redis before it judges any room again: a live agent is never taken for a dead one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from livekit import api

from . import records

logger = logging.getLogger("voice_agent.watchdog")

#: A dispatch is given this long to claim the room before another is tried (ms).
_DISPATCH_GUARD_MS = 15_000


class CallWatchdog:
    """Re-dispatches open calls that no job holds (see the module docstring)."""

    def __init__(
        self,
        *,
        redis_url: str,
        livekit_url: str,
        api_key: str,
        api_secret: str,
        agent_name: str,
        interval_s: float = 1.0,
        max_redispatches: int = 3,
        hold_off_s: float = 4.0,
    ) -> None:
        self._redis_url = redis_url
        self._livekit = (livekit_url, api_key, api_secret)
        self._agent_name = agent_name
        self._interval_s = interval_s
        self._max = max_redispatches
        self._hold_off_s = hold_off_s

    async def run(self) -> None:
        """Check every `interval_s` until cancelled; errors are logged, never fatal."""
        redis = records.connect(self._redis_url)
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
                await asyncio.sleep(self._interval_s)
        finally:
            await lk.aclose()
            await redis.aclose()

    async def check_once(self, redis: records.aioredis.Redis, lk: api.LiveKitAPI) -> list[str]:
        """One round; returns the rooms dispatched again."""
        dispatched = []
        for room in await redis.smembers(records.OPEN_CALLS):
            if await redis.exists(records.agent_key(room)):
                continue  # a live job holds it
            try:
                listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                participants = list(listing.participants)
            except api.TwirpError as exc:
                if exc.code != "not_found":
                    raise
                participants = []
            callers = [p for p in participants if p.kind != api.ParticipantInfo.Kind.AGENT]
            if not callers:
                await self._close(redis, room, "caller gone")
                continue
            if not await redis.set(records.redispatch_key(room), self._agent_name, nx=True, px=_DISPATCH_GUARD_MS):
                continue  # another watchdog (or an earlier round) dispatched it just now
            count = await redis.hincrby(records.call_key(room), "redispatches", 1)
            if count > self._max:
                await self._close(redis, room, "agent lost too often")
                continue
            for ghost in (p for p in participants if p.kind == api.ParticipantInfo.Kind.AGENT):
                # The dead job's participant lingers until LiveKit times it out: remove it now.
                try:
                    await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=ghost.identity))
                except api.TwirpError:
                    pass
            metadata = await redis.hget(records.call_key(room), "metadata") or ""
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(room=room, agent_name=self._agent_name, metadata=metadata)
            )
            await self._event(redis, room, {"event": "redispatched", "attempt": count})
            logger.warning("the agent of room %s is gone; dispatched a new one (%d)", room, count)
            dispatched.append(room)
        return dispatched

    async def _close(self, redis: records.aioredis.Redis, room: str, reason: str) -> None:
        now = f"{time.time():.3f}"
        await self._event(redis, room, {"event": "call_ended", "reason": reason})
        await redis.hset(records.call_key(room), mapping={"ended_at": now, "end_reason": reason})
        await redis.srem(records.OPEN_CALLS, room)
        logger.info("call in room %s closed: %s", room, reason)

    async def _event(self, redis: records.aioredis.Redis, room: str, data: dict[str, object]) -> None:
        await redis.xadd(
            records.events_key(room),
            {"type": "lifecycle", "at": f"{time.time():.3f}", "job": "watchdog",
             "seq": f"{time.time_ns()}", "data": json.dumps(data)},
        )
