"""Admission control: refuse a call, before its room exists, when no agent could take it.

The agent workers publish what they can take in Redis (`voice_calls.admission`); each token
request asks the `ADMIT` script whether the calls being served plus those admitted but not
started yet leave room for one more. If not, the endpoint answers ``503 at_capacity`` with
``Retry-After`` and no room is created, so nobody waits alone in a silent room. An admitted
call holds its place for `TOKEN_JOIN_WINDOW_SECONDS` (the time to join and for the agent to
start); then the worker that serves it lists it.

With no agent worker registered at all, capacity is zero and every call is refused the same
way (the page says all lines are busy and tries again), rather than joining a room nobody
will answer.
"""

from __future__ import annotations

import math
import time

import redis
import structlog
from voice_calls.admission import ADMIT, PENDING, WORKER_PREFIX, WORKERS, Admission

from .errors import ApiError
from .settings import Settings

log = structlog.get_logger("token_server")


class AdmissionControl:
    """Asks Redis whether one more call fits (see the module docstring).

    Args:
        client: a ``redis.Redis`` (``decode_responses=True``), shared with the agents.
        join_window_s: how long an admitted call holds its place before its agent starts (s).
        retry_after_s: what ``Retry-After`` says when the lines are busy (s).
    """

    def __init__(self, client: redis.Redis, join_window_s: int, retry_after_s: int) -> None:
        self._admit = client.register_script(ADMIT)
        self._join_window_s = join_window_s
        self._retry_after_s = retry_after_s

    def admit(self, room: str) -> Admission:
        """Admit a call in `room` (it counts as pending), or say why not.

        Raises:
            redis.RedisError: Redis unreachable (the app answers 503 storage_unavailable).
        """
        now = time.time()
        admitted, live, pending, capacity = self._admit(
            keys=[WORKERS, PENDING], args=[now, room, now + self._join_window_s, WORKER_PREFIX]
        )
        return Admission(bool(int(admitted)), int(live), int(pending), int(capacity))

    def refusal(self, verdict: Admission) -> ApiError:
        """The ``503 at_capacity`` answer for a call that was not admitted."""
        log.warning("at_capacity", live=verdict.live, pending=verdict.pending, capacity=verdict.capacity)
        if verdict.capacity == 0:
            detail = "no agent is available right now"
        elif verdict.capacity == 1:
            detail = "the only line is busy"
        else:
            detail = f"all {verdict.capacity} lines are busy"
        retry = max(1, math.ceil(self._retry_after_s))
        return ApiError(503, "at_capacity", f"{detail}; retry in {retry} s", {"Retry-After": str(retry)})


def create_admission(settings: Settings) -> AdmissionControl | None:
    """Admission control for `settings`: None when it is off or there is no Redis to share
    with the agents (every call is then admitted)."""
    url = settings.redis_url.get_secret_value()
    if not settings.token_admission_control or not url:
        return None
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    return AdmissionControl(client, settings.token_join_window_seconds, settings.token_busy_retry_after_seconds)
