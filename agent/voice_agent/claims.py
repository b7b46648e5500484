"""One agent per room, with fencing: the room claim a job holds in Redis, and who is alive.

A job claims its room before it serves it, and refreshes the claim while it does:

    voice:call:{room}:agent   STRING  "{generation}:{job id}", expires after the claim TTL
    voice:call:{room}         HASH    agent_generation (int, 0 if absent): bumped by the
                                      watchdog each time it hands the call to a new job;
                                      agent_job: the last job that claimed the room

The generation fences a job out once the call has been handed over: a job whose event
loop stalled past the TTL may take its expired claim again only if the generation is
still the one it claimed with, so after a handover it learns it lost the room and leaves
instead of fighting the new job for it.

Every connection a job opens to Redis carries the client name ``voice-job:{job id}``
(``CLIENT SETNAME``). When a job's process dies, the kernel closes its sockets and Redis
drops its connections at once, while a job whose loop is merely stalled keeps them:
`live_jobs` (``CLIENT LIST``) tells the two apart long before a claim could expire.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from voice_calls.records import agent_key, call_key

logger = logging.getLogger("voice_agent.claims")

#: Redis client names of job connections: this prefix + the job id.
JOB_CLIENT_PREFIX = "voice-job:"
GENERATION_FIELD = "agent_generation"
JOB_FIELD = "agent_job"

# KEYS: claim, call hash. ARGV: job id, ttl ms. Returns the generation taken, or -1 if held.
_TAKE = f"""
if redis.call('exists', KEYS[1]) == 1 then return -1 end
local gen = tonumber(redis.call('hget', KEYS[2], '{GENERATION_FIELD}') or '0')
redis.call('set', KEYS[1], gen .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('hset', KEYS[2], '{JOB_FIELD}', ARGV[1])
return gen
"""
# KEYS: claim, call hash. ARGV: job id, generation, ttl ms. 1: still ours; 0: lost (another
# job holds it, or the call was handed over since: the generation moved).
_REFRESH = f"""
local mine = ARGV[2] .. ':' .. ARGV[1]
local holder = redis.call('get', KEYS[1])
if holder == mine then redis.call('pexpire', KEYS[1], ARGV[3]) return 1 end
if holder then return 0 end
if (redis.call('hget', KEYS[2], '{GENERATION_FIELD}') or '0') ~= ARGV[2] then return 0 end
redis.call('set', KEYS[1], mine, 'PX', ARGV[3])
return 1
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# KEYS: claim, call hash. ARGV: the holder value the watchdog judged dead ('' for none).
# Returns the new generation, or -1 when someone else claimed the room meanwhile.
_HAND_OVER = f"""
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('del', KEYS[1])
return redis.call('hincrby', KEYS[2], '{GENERATION_FIELD}', 1)
"""


def job_client_name(job_id: str) -> str:
    """The Redis client name of a job's connections (no spaces: CLIENT SETNAME refuses them)."""
    return JOB_CLIENT_PREFIX + job_id.replace(" ", "_")


def holder_job(holder: str | None) -> str | None:
    """The job id in a claim value ``"{generation}:{job}"``."""
    return holder.split(":", 1)[1] if holder and ":" in holder else holder


class RoomClaim:
    """A job's claim on one room.

    Args:
        redis: the job's client (`records.connect` with `job_client_name`).
        room: the LiveKit room.
        job_id: the LiveKit job id.
    """

    def __init__(self, redis: Redis, room: str, job_id: str) -> None:
        self._redis = redis
        self.room = room
        self.job_id = job_id
        self.generation: int | None = None

    async def take(self, ttl_ms: int) -> bool | None:
        """Become the room's agent. True: ours; False: another job holds it; None: Redis
        unreachable (the caller decides; we serve rather than leave the caller alone)."""
        try:
            generation = int(await self._redis.eval(_TAKE, 2, agent_key(self.room), call_key(self.room),
                                                    self.job_id, ttl_ms))
        except RedisError as exc:
            logger.warning("cannot check who holds room %s (Redis: %s); serving the call", self.room, exc)
            return None
        if generation < 0:
            return False
        self.generation = generation
        return True

    async def refresh(self, ttl_ms: int) -> bool:
        """Keep the room (taking the claim again if it expired while Redis was away and the
        call was not handed over meanwhile). False: the room is lost; leave it."""
        if self.generation is None:  # never confirmed (Redis was away at the start): try now
            return await self.take(ttl_ms) is not False
        try:
            return bool(await self._redis.eval(_REFRESH, 2, agent_key(self.room), call_key(self.room),
                                               self.job_id, self.generation, ttl_ms))
        except RedisError:
            return True  # Redis away: keep serving; the claim is taken again when it is back

    async def release(self) -> None:
        """Give the room up (only if we still hold it)."""
        if self.generation is None:
            return
        try:
            await self._redis.eval(_RELEASE, 1, agent_key(self.room), f"{self.generation}:{self.job_id}")
        except RedisError as exc:
            logger.warning("could not release room %s: %s", self.room, exc)


async def hand_over(redis: Redis, room: str, dead_holder: str | None) -> int | None:
    """Fence the room's current holder out (it was judged dead); the new generation, or None
    when another job claimed the room meanwhile (nothing to hand over)."""
    generation = int(await redis.eval(_HAND_OVER, 2, agent_key(room), call_key(room), dead_holder or ""))
    return None if generation < 0 else generation


async def live_jobs(redis: Redis) -> set[str] | None:
    """Ids of the jobs that have a connection to Redis now, or None when this Redis does not
    let us list clients (a managed service may refuse ``CLIENT LIST``)."""
    try:
        clients = await redis.client_list()
    except ResponseError as exc:
        logger.warning("CLIENT LIST refused (%s): telling dead jobs by their claims only", exc)
        return None
    return {c["name"][len(JOB_CLIENT_PREFIX):] for c in clients if c.get("name", "").startswith(JOB_CLIENT_PREFIX)}
