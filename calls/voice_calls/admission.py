"""Admission: can one more call be served right now?

Every agent worker publishes its capacity (worker.py's `CapacityPublisher` in the agent);
the token server asks `ADMIT` before it creates a room, so a caller is refused with
`503 at_capacity` instead of being put in a room that no agent will ever join.

Keys (Redis; times are Unix seconds):

    voice:workers            SET     ids of workers that have published (stale ids are
                                     dropped by `ADMIT` when their key has expired)
    voice:worker:{id}        STRING  JSON `WorkerCapacity`; expires unless the worker
                                     refreshes it (a dead worker's capacity disappears)
    voice:calls:pending      ZSET    room -> expiry: calls admitted whose agent has not
                                     started yet (token issued, caller joining, dispatch
                                     under way); dropped once a worker lists the room, or
                                     when the join window is over

A call counts against capacity while it is pending or listed by a live worker. Capacity is
the sum of `max_calls` of the workers that are not draining; calls on a draining worker do
not use anyone else's capacity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PREFIX = "voice:"
WORKERS = f"{PREFIX}workers"
WORKER_PREFIX = f"{PREFIX}worker:"
PENDING = f"{PREFIX}calls:pending"


def worker_key(worker_id: str) -> str:
    """The key holding one worker's `WorkerCapacity`."""
    return f"{WORKER_PREFIX}{worker_id}"


@dataclass(frozen=True)
class WorkerCapacity:
    """What one agent worker can take, as it publishes it.

    Attributes:
        max_calls: calls this worker takes at once.
        draining: the worker takes no new calls (it is shutting down).
        rooms: the rooms of the calls it serves now (its jobs).
        at: when this was published (Unix s).
    """

    max_calls: int
    draining: bool
    rooms: list[str] = field(default_factory=list)
    at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass(frozen=True)
class Admission:
    """`ADMIT`'s answer: whether the call was admitted, and the counts it was judged on."""

    admitted: bool
    live: int
    pending: int
    capacity: int


# KEYS[1] workers set, KEYS[2] pending zset.
# ARGV[1] now (s), ARGV[2] room, ARGV[3] pending expiry (s), ARGV[4] worker key prefix.
# Returns {admitted 0|1, live calls, pending calls, capacity} (before this call).
ADMIT = """
local now = tonumber(ARGV[1])
local capacity, live, listed = 0, 0, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[4] .. id)
  if not raw then
    redis.call('SREM', KEYS[1], id)
  else
    local ok, worker = pcall(cjson.decode, raw)
    if ok and type(worker) == 'table' then
      local rooms = worker.rooms or {}
      for _, room in ipairs(rooms) do listed[room] = true end
      if not worker.draining then
        capacity = capacity + (tonumber(worker.max_calls) or 0)
        live = live + #rooms
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local pending = 0
for _, room in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if listed[room] then redis.call('ZREM', KEYS[2], room) else pending = pending + 1 end
end
if live + pending >= capacity then return {0, live, pending, capacity} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return {1, live, pending, capacity}
"""

# KEYS[1] workers set, KEYS[2] this worker's key. ARGV[1] id, ARGV[2] JSON, ARGV[3] ttl (ms).
PUBLISH = """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] workers set, KEYS[2] this worker's key. ARGV[1] id.
WITHDRAW = """
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"""
