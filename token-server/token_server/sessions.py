"""Who is in a call right now, and what LiveKit told us: the concurrent-session cap and
the webhook event log.

A *session* is one room issued to one identity. It counts against the identity's cap

* from the moment its token is issued until the token expires (``pending``: the token
  TTL, since an unused token is worthless after that), then
* from LiveKit's ``participant_joined`` webhook, for at most `live_s` seconds (a safety
  net if the ``participant_left`` / ``room_finished`` webhook never arrives),
* until ``participant_left`` (that identity left that room) or ``room_finished``.

Without webhooks the cap still holds for tokens issued within one TTL.

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

    def joined(self, identity: str, room: str, live_s: int) -> None:
        """`identity` joined `room`: count it for up to `live_s` seconds. Ignored unless
        the room was issued to that identity (the agent joins rooms too)."""

    def left(self, identity: str, room: str) -> None:
        """`identity` left `room`: the session stops counting."""

    def room_finished(self, room: str) -> None:
        """`room` closed: its session stops counting, whoever owned it."""

    def active(self, identity: str) -> int:
        """How many sessions count against `identity` now."""

    def record_event(self, fields: Mapping[str, str]) -> None:
        """Append one webhook event (string fields) to the event log."""

    def events(self, count: int = 100) -> list[dict[str, str]]:
        """The last `count` recorded events, oldest first."""


def _retry_after(earliest_expiry: float, now: float) -> int:
    return max(1, int(earliest_expiry - now + 0.999))


# --- Redis ----------------------------------------------------------------------------

# KEYS: sessions zset (room -> expiry), owner key of the room.
# ARGV: now, expiry, cap, room, key lifetime (s), identity.
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, first[2]}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[5])
return {1, '0'}
"""

# KEYS: sessions zset, owner key. ARGV: identity, expiry, key lifetime (s), room.
_JOINED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


def _sessions_key(identity: str) -> str:
    return f"{KEY_PREFIX}sessions:{identity}"


def _owner_key(room: str) -> str:
    return f"{KEY_PREFIX}room-owner:{room}"


class RedisSessionStore:
    """`SessionStore` in Redis: a sorted set per identity (room -> expiry time), an owner
    key per room, a stream of webhook events.

    Args:
        client: a ``redis.Redis`` with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._joined = client.register_script(_JOINED)

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
            keys=[_sessions_key(identity), _owner_key(room)],
            args=[now, now + pending_s, cap, room, keep, identity],
        )
        if int(granted):
            return Reservation(True)
        return Reservation(False, _retry_after(float(first), now))

    def joined(self, identity: str, room: str, live_s: int) -> None:
        self._joined(
            keys=[_sessions_key(identity), _owner_key(room)],
            args=[identity, time.time() + live_s, live_s + 60, room],
        )

    def left(self, identity: str, room: str) -> None:
        self._redis.zrem(_sessions_key(identity), room)

    def room_finished(self, room: str) -> None:
        owner = self._redis.getdel(_owner_key(room))
        if owner:
            self._redis.zrem(_sessions_key(str(owner)), room)

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
        self._owners: dict[str, str] = {}
        self._events: deque[dict[str, str]] = deque(maxlen=EVENTS_MAX)

    def _live(self, identity: str, now: float) -> dict[str, float]:
        """The identity's counting sessions; forgets those expired over a minute ago
        (a late webhook for them can still find the owner until then)."""
        rooms = self._sessions.pop(identity, {})
        for room in [room for room, until in rooms.items() if until <= now - 60]:
            del rooms[room]
            self._owners.pop(room, None)
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
            self._owners[room] = identity
            return Reservation(True)

    def joined(self, identity: str, room: str, live_s: int) -> None:
        with self._lock:
            if self._owners.get(room) == identity:
                self._sessions.setdefault(identity, {})[room] = time.time() + live_s

    def left(self, identity: str, room: str) -> None:
        with self._lock:
            self._sessions.get(identity, {}).pop(room, None)

    def room_finished(self, room: str) -> None:
        with self._lock:
            owner = self._owners.pop(room, None)
            if owner is not None:
                self._sessions.get(owner, {}).pop(room, None)

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
