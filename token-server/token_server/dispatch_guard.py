"""No caller left alone in a room without an agent: dispatch again, or tell and close.

LiveKit dispatches the agent once, when the room is created (the token's room
configuration). If no worker is registered at that moment (a restart, a crash loop, a
drain) or every worker is full, livekit-server logs "no worker available" and forgets the
dispatch (livekit-server 1.13.5: `AgentHandler.JobRequest`, `Room.launchRoomAgents`):
the caller sits in a silent room. Nothing in the room can notice, since there is no
agent; the token server can, from LiveKit's webhooks and its server API.

When a caller (a participant of kind STANDARD or SIP) joins, the room goes on a watch
list in Redis (`WAITING`, room -> the join time). Every `interval_s`, for each room
watched for at least `first_check_s`:

* an agent participant is in the room, or the caller is gone: stop watching;
* no worker has taken the call (no worker marked it accepted, `voice_calls.records.accepted_key`):
  dispatch again, at most once per `retry_s` (a worker that registered since takes it);
* still no worker after `notice_s`, or a worker took it but no agent joined within
  `join_timeout_s`: tell the caller and close the room.

An agent that leaves a room with a caller in it (its worker died, or it ended the call
and said why) starts the same watch (`AGENT_LEFT`): the agent workers bring a new agent
themselves (their watchdog); if none is there after `join_timeout_s` (no worker at all),
the caller is told and the room closed. The notice (`notice`) goes out as a
  data message on `NOTICE_TOPIC` and, since a caller whose media is still connecting may
  not get that, as the room's metadata too (``{"voice.notice": notice}``), which travels
  with the signalling ahead of the close.

Admission control (`admission.py`) already refuses, before any room exists, a call that no
live worker has a line for; this guard covers what it cannot see: a worker that died after
publishing its capacity (the key lives a few seconds), admission turned off, a worker lost
after the call was admitted. A room it closes gives its admission line back at once.

Several token-server processes may watch the same list: a short per-room lock in Redis
makes one of them act per round.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog
from livekit import api
from voice_calls.admission import PENDING
from voice_calls.notices import TOPIC
from voice_calls.records import accepted_key

from .livekit_admin import CALLER_KINDS, LiveKitError, RoomAdmin

log = structlog.get_logger("token_server")

#: Rooms with a caller and (as far as we know) no agent yet: ZSET room -> caller joined (Unix s).
WAITING = "token-server:awaiting-agent"
#: Rooms whose agent left while a caller may still be there: ZSET room -> agent left (Unix s).
AGENT_LEFT = "token-server:agent-left"
_LOCK = WAITING + ":{room}:lock"
_RETRY = WAITING + ":{room}:retry"

#: The data-message topic of the appliance's notices to callers (see the OpenAPI document).
NOTICE_TOPIC = TOPIC
NO_AGENT_CODE = "no_agent_available"
NO_AGENT_MESSAGE = "Sorry, no assistant is available to take your call right now. Please try again in a minute."


def notice(code: str, message: str, *, closing: bool) -> dict[str, object]:
    """The JSON payload of a notice: ``{"code", "message", "closing"}``; `closing` says the
    room is about to be closed (the call is over)."""
    return {"code": code, "message": message, "closing": closing}


@dataclass(frozen=True)
class GuardTimes:
    """The guard's clock, in seconds (see the module docstring)."""

    notice_s: float = 3.0
    join_timeout_s: float = 60.0
    first_check_s: float = 1.0
    retry_s: float = 1.0
    interval_s: float = 0.5
    #: Between the notice and closing the room, so the message arrives first.
    close_delay_s: float = 0.4


class DispatchGuard:
    """Watches rooms whose caller has no agent yet (module docstring).

    Args:
        client: a synchronous ``redis.Redis`` with ``decode_responses=True``.
        admin: LiveKit's server API.
        agent_name: the name dispatches go to.
        times: the guard's clock.
        on_outcome: called with ``"redispatched"`` or ``"refused"`` (metrics).
    """

    def __init__(
        self,
        client: redis.Redis,
        admin: RoomAdmin,
        agent_name: str,
        times: GuardTimes = GuardTimes(),
        on_outcome: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self._redis = client
        self._admin = admin
        self._agent_name = agent_name
        self._times = times
        self._on_outcome = on_outcome
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # ---- what LiveKit's webhooks tell us --------------------------------------------

    def observe(self, event: api.WebhookEvent) -> None:
        """Follow one verified webhook event (and start the watch on the first one)."""
        room, kind = event.room.name, event.participant.kind
        if not room:
            return
        if event.event == "participant_joined" and kind in CALLER_KINDS:
            self._redis.zadd(WAITING, {room: time.time()}, nx=True)
            self.start()
        elif event.event == "participant_joined" and kind == api.ParticipantInfo.Kind.AGENT:
            self._redis.zrem(WAITING, room)
            self._redis.zrem(AGENT_LEFT, room)
        elif event.event == "participant_left" and kind == api.ParticipantInfo.Kind.AGENT:
            self._redis.zadd(AGENT_LEFT, {room: time.time()}, nx=True)
            self.start()
        elif event.event == "room_finished":
            self._redis.zrem(WAITING, room)
            self._redis.zrem(AGENT_LEFT, room)
            self._redis.zrem(PENDING, room)  # admission control: the call no longer holds a line

    # ---- the watch ----------------------------------------------------------------------

    def start(self) -> None:
        """Run `check_once` every `interval_s` in a daemon thread (once per process)."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dispatch-guard", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.check_once()
                failing = False
            except (redis.RedisError, LiveKitError) as exc:
                if not failing:  # once per outage, not every round
                    log.warning("dispatch_guard_round_failed", error=str(exc))
                failing = True
            except Exception:  # never let the thread die: callers depend on it
                log.exception("dispatch_guard_round_failed")
            time.sleep(self._times.interval_s * (4 if failing else 1))

    def check_once(self, now: float | None = None) -> dict[str, str]:
        """One round over the watched rooms; returns what was done, room -> action
        (``"redispatched"``, ``"refused"``, ``"agent_present"``, ``"caller_gone"``, ``"waiting"``)."""
        now = time.time() if now is None else now
        times = self._times
        done: dict[str, str] = {}
        for watch, first_check_s in ((WAITING, times.first_check_s), (AGENT_LEFT, times.join_timeout_s)):
            for room, since in self._redis.zrangebyscore(watch, "-inf", now - first_check_s, withscores=True):
                lock_ms = int(times.interval_s * 1000 * 0.9)
                if not self._redis.set(_LOCK.format(room=room), "1", nx=True, px=max(lock_ms, 100)):
                    continue
                done[room] = self._check_room(room, now - since, watch)
        return done

    def _check_room(self, room: str, waited_s: float, watch: str) -> str:
        times = self._times
        try:
            participants = self._admin.list_participants(room)
        except LiveKitError as exc:
            if exc.code != "not_found":
                raise
            participants = []
        if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in participants):
            self._redis.zrem(watch, room)
            return "agent_present"
        if not any(p.kind in CALLER_KINDS for p in participants):
            self._redis.zrem(watch, room)
            return "caller_gone"
        if watch == AGENT_LEFT:
            # The agent workers hand a lost agent's call over themselves (their watchdog); this
            # only ends a wait that went on too long (no worker at all), or a room the agent left
            # on purpose, having told the caller why.
            self._refuse(room, True, waited_s, watch)
            return "refused"
        dispatches = self._admin.list_dispatches(room)
        # A worker marks the call when it accepts the job (livekit-server 1.13.5 lists a
        # dispatch's jobs only much later, if at all).
        taken = bool(self._redis.exists(accepted_key(room))) or any(d.state.jobs for d in dispatches)
        if (not taken and waited_s >= times.notice_s) or waited_s >= times.join_timeout_s:
            self._refuse(room, taken, waited_s, watch)
            return "refused"
        if not taken and self._redis.set(_RETRY.format(room=room), "1", nx=True, px=int(times.retry_s * 1000)):
            metadata = next((d.metadata for d in dispatches if d.agent_name == self._agent_name), "")
            self._admin.create_dispatch(room, self._agent_name, metadata)
            log.warning("no_worker_redispatched", room=room, waited_s=round(waited_s, 1),
                        detail="no worker has taken the call yet; dispatched it again")
            self._on_outcome("redispatched")
            return "redispatched"
        return "waiting"

    def _refuse(self, room: str, taken: bool, waited_s: float, watch: str) -> None:
        if watch == AGENT_LEFT:
            why = "the agent left and none came back"
        else:
            why = "a worker took the call but its agent never joined" if taken else "no worker took the call"
        log.error("caller_told_no_agent", room=room, waited_s=round(waited_s, 1),
                  detail=f"{why}; told the caller and closed the room")
        self._redis.zrem(watch, room)
        self._redis.zrem(PENDING, room)  # admission control: a refused call holds no line
        message = notice(NO_AGENT_CODE, NO_AGENT_MESSAGE, closing=True)
        try:
            # The data message may not arrive while the caller's media is still connecting; the
            # room's metadata travels with the signalling, ahead of the close: send both.
            self._admin.set_room_metadata(room, json.dumps({NOTICE_TOPIC: message}))
            self._admin.send_json(room, NOTICE_TOPIC, message)
            time.sleep(self._times.close_delay_s)
        finally:
            self._admin.delete_room(room)
            self._on_outcome("refused")
