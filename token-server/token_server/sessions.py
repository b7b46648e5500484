"""Who is in a call right now, and what LiveKit told us: the concurrent-session cap and
the webhook event log.

A *session* is one room joined or to be joined by one identity. It counts against the
identity's cap

* from the moment its token is issued for a short join window (``pending``:
  `TOKEN_JOIN_WINDOW_SECONDS`, 30 s by default), so a token fetched and never used (LiveKit's
  starter apps fetch one when the page loads and may fetch another on start) soon stops
  counting, then
* from LiveKit's ``participant_joined`` webhook, for at most `live_s` seconds (a safety
  net if the ``participant_left`` / ``room_finished`` webhook never arrives),
* until ``participant_left`` (that identity left that room) or ``room_finished``.

Every join by a caller counts under the identity LiveKit verified from its token, whether
or not the room is still on record: a token stays valid after its room finished (and
rooms are created at join time), so leaving and joining again with the same token is a
new call, and so is a join with a token used after its join window (it stays valid for
the token TTL). `SessionStore.joined` refuses a join that would take the identity past its
cap; the webhook receiver then deletes that room.

Each session has its own expiry (the sorted set's score); the set itself lives as long as
its latest session, so a new reservation never shortens a long call's.

Two stores with the same behaviour: `RedisSessionStore` (shared by every worker and
surviving restarts; what the appliance runs) and `MemorySessionStore` (one process;
tests and a Redis-less trial). Times are Unix seconds (`time.time()`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import redis

#: Every Redis key this server writes starts with this.
KEY_PREFIX = "token-server:"
#: The stream (Redis) / list (memory) of LiveKit webhook events, newest last, capped.
EVENTS_KEY = KEY_PREFIX + "livekit-events"
EVENTS_MAX = 10_000


@dataclass(frozen=True)
class Reservation:
    """The answer to `SessionStore.reserve`.

    `granted`: the session was recorded. Otherwise `retry_after_s` is when the identity's
    earliest session stops counting (seconds from now, at least 1).
    """

    granted: bool
    retry_after_s: int = 0


class SessionStore(Protocol):
    """What the token endpoint and the webhook receiver need to remember."""

    def reserve(self, identity: str, room: str, pending_s: int, cap: int) -> Reservation:
        """Record `room` for `identity` for `pending_s` seconds unless it already has
        `cap` sessions counting (atomic)."""

    def joined(self, identity: str, room: str, live_s: int, cap: int) -> bool:
        """`identity` (a caller, never the agent) joined `room`: count it for up to
        `live_s` seconds and return True, unless `room` is not yet counted for `identity`
        and `cap` other sessions already are: then nothing is recorded and the answer is
        False (the join is over the cap)."""

    def left(self, identity: str, room: str) -> None:
        """`identity` left `room`: the session stops counting."""

    def room_finished(self, room: str) -> None:
        """`room` closed: its sessions stop counting, for every identity that joined it."""

    def active(self, identity: str) -> int:
        """How many sessions count against `identity` now."""

    def record_event(self, fields: Mapping[str, str]) -> None:
        """Append one webhook event (string fields) to the event log."""

    def events(self, count: int = 100) -> list[dict[str, str]]:
        """The last `count` recorded events, oldest first."""


def _retry_after(earliest_expiry: float, now: float) -> int:
    return max(1, int(earliest_expiry - now + 0.999))


# --- Redis ----------------------------------------------------------------------------

# The sessions set lives until its latest session's expiry plus a minute (EXPIREAT from
# the highest score: never shortened by a reservation); the room's member set (who joined
# or was issued it, for room_finished) at least `ARGV` lifetime (TTL only raised).
_KEEP = """
local function keep_sessions(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('EXPIREAT', key, math.ceil(tonumber(last[2])) + 60) end
end
local function keep_members(key, lifetime)
  if redis.call('TTL', key) < lifetime then redis.call('EXPIRE', key, lifetime) end
end
"""

# KEYS: sessions zset (room -> expiry), member set of the room.
# ARGV: now, expiry, cap, room, member-set lifetime (s), identity.
_RESERVE = _KEEP + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, first[2]}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
keep_sessions(KEYS[1])
redis.call('SADD', KEYS[2], ARGV[6])
keep_members(KEYS[2], tonumber(ARGV[5]))
return {1, '0'}
"""

# Same KEYS and ARGV as _RESERVE. 0: over the cap, nothing recorded.
_JOINED = _KEEP + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
keep_sessions(KEYS[1])
redis.call('SADD', KEYS[2], ARGV[6])
keep_members(KEYS[2], tonumber(ARGV[5]))
return 1
"""

# KEYS: member set of the room. ARGV: the sessions key prefix, room.
_FINISHED = """
for _, identity in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZREM', ARGV[1] .. identity, ARGV[2])
end
redis.call('DEL', KEYS[1])
"""

_SESSIONS_PREFIX = f"{KEY_PREFIX}sessions:"


def _sessions_key(identity: str) -> str:
    return _SESSIONS_PREFIX + identity


def _members_key(room: str) -> str:
    return f"{KEY_PREFIX}room-members:{room}"


class RedisSessionStore:
    """`SessionStore` in Redis: a sorted set per identity (room -> expiry time), a set
    per room (the identities it counts for), a stream of webhook events.

    Args:
        client: a ``redis.Redis`` with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._joined = client.register_script(_JOINED)
        self._finished = client.register_script(_FINISHED)

    @classmethod
    def from_url(cls, url: str) -> RedisSessionStore:
        """Connect lazily to `url` (short timeouts: a dead Redis answers 503 quickly)."""
        return cls(
            redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        )

    def reserve(self, identity: str, room: str, pending_s: int, cap: int) -> Reservation:
        now = time.time()
        keep = max(pending_s, 60) * 2
        granted, first = self._reserve(
            keys=[_sessions_key(identity), _members_key(room)],
            args=[now, now + pending_s, cap, room, keep, identity],
        )
        if int(granted):
            return Reservation(True)
        return Reservation(False, _retry_after(float(first), now))

    def joined(self, identity: str, room: str, live_s: int, cap: int) -> bool:
        now = time.time()
        return bool(int(self._joined(
            keys=[_sessions_key(identity), _members_key(room)],
            args=[now, now + live_s, cap, room, live_s + 60, identity],
        )))

    def left(self, identity: str, room: str) -> None:
        self._redis.zrem(_sessions_key(identity), room)

    def room_finished(self, room: str) -> None:
        self._finished(keys=[_members_key(room)], args=[_SESSIONS_PREFIX, room])

    def active(self, identity: str) -> int:
        return int(self._redis.zcount(_sessions_key(identity), f"({time.time()}", "+inf"))

    def record_event(self, fields: Mapping[str, str]) -> None:
        self._redis.xadd(EVENTS_KEY, dict(fields), maxlen=EVENTS_MAX, approximate=True)

    def events(self, count: int = 100) -> list[dict[str, str]]:
        entries = self._redis.xrevrange(EVENTS_KEY, count=count)
        return [dict(fields) for _, fields in reversed(entries)]


# --- memory ---------------------------------------------------------------------------


class MemorySessionStore:
    """`SessionStore` in this process (thread-safe; one gunicorn worker only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, float]] = {}
        self._members: dict[str, set[str]] = {}
        self._events: deque[dict[str, str]] = deque(maxlen=EVENTS_MAX)

    def _live(self, identity: str, now: float) -> dict[str, float]:
        """The identity's counting sessions; forgets those expired over a minute ago
        (a late webhook for them can still find them until then)."""
        rooms = self._sessions.pop(identity, {})
        for room in [room for room, until in rooms.items() if until <= now - 60]:
            del rooms[room]
            members = self._members.get(room, set())
            members.discard(identity)
            if not members:
                self._members.pop(room, None)
        if rooms:
            self._sessions[identity] = rooms
        return {room: until for room, until in rooms.items() if until > now}

    def reserve(self, identity: str, room: str, pending_s: int, cap: int) -> Reservation:
        now = time.time()
        with self._lock:
            live = self._live(identity, now)
            if len(live) >= cap:
                return Reservation(False, _retry_after(min(live.values()), now))
            self._sessions.setdefault(identity, {})[room] = now + pending_s
            self._members.setdefault(room, set()).add(identity)
            return Reservation(True)

    def joined(self, identity: str, room: str, live_s: int, cap: int) -> bool:
        now = time.time()
        with self._lock:
            live = self._live(identity, now)
            if room not in live and len(live) >= cap:
                return False
            self._sessions.setdefault(identity, {})[room] = now + live_s
            self._members.setdefault(room, set()).add(identity)
            return True

    def left(self, identity: str, room: str) -> None:
        with self._lock:
            self._sessions.get(identity, {}).pop(room, None)

    def room_finished(self, room: str) -> None:
        with self._lock:
            for identity in self._members.pop(room, set()):
                self._sessions.get(identity, {}).pop(room, None)

    def active(self, identity: str) -> int:
        with self._lock:
            return len(self._live(identity, time.time()))

    def record_event(self, fields: Mapping[str, str]) -> None:
        with self._lock:
            self._events.append(dict(fields))

    def events(self, count: int = 100) -> list[dict[str, str]]:
        with self._lock:
            return list(self._events)[-count:]


def create_store(redis_url: str) -> SessionStore:
    """`RedisSessionStore` for a ``redis://`` URL, `MemorySessionStore` for an empty one."""
    return RedisSessionStore.from_url(redis_url) if redis_url else MemorySessionStore()
