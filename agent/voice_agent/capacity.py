"""This worker's capacity in Redis, for the token server's admission control.

Every `interval_s` the worker's main process publishes how many calls it takes
(`max_calls`), whether it is draining, and the rooms of the calls it serves, in the format
of `voice_calls.admission`; the key expires after `ttl_s`, so a worker that died stops
counting on its own. The token server refuses a call (``503 at_capacity``) when the calls
served plus those admitted but not started fill every live worker's capacity.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from voice_calls.admission import PUBLISH, WITHDRAW, WORKERS, WorkerCapacity, worker_key

logger = logging.getLogger("voice_agent.capacity")


def worker_id() -> str:
    """A name for this worker process, stable while it runs: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class CapacityPublisher:
    """Publishes one worker's `WorkerCapacity` until cancelled, then withdraws it.

    Args:
        redis: an asyncio client (shared Redis with the token server).
        max_calls: calls this worker takes at once.
        rooms: the rooms of the calls this worker serves now.
        draining: whether the worker has stopped taking calls.
        interval_s: publish this often (s).
        ttl_s: a value not refreshed within this long disappears (s).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_calls: int,
        rooms: Callable[[], list[str]],
        draining: Callable[[], bool],
        interval_s: float = 1.0,
        ttl_s: float = 5.0,
    ) -> None:
        self.id = worker_id()
        self._redis = redis
        self._max_calls = max_calls
        self._rooms = rooms
        self._draining = draining
        self._interval_s = interval_s
        self._ttl_ms = int(ttl_s * 1000)

    def capacity(self) -> WorkerCapacity:
        """What this worker can take, now."""
        return WorkerCapacity(self._max_calls, self._draining(), sorted(self._rooms()), round(time.time(), 3))

    async def publish(self) -> None:
        """Publish once.

        Raises:
            redis.exceptions.RedisError: Redis unreachable.
        """
        value = self.capacity().to_json()
        await self._redis.eval(PUBLISH, 2, WORKERS, worker_key(self.id), self.id, value, self._ttl_ms)

    async def run(self) -> None:
        """Publish every `interval_s` until cancelled; Redis errors are logged, never fatal."""
        failing = False
        try:
            while True:
                try:
                    await self.publish()
                    if failing:
                        logger.info("publishing capacity again")
                    failing = False
                except (RedisError, OSError) as exc:
                    if not failing:
                        logger.warning("cannot publish this worker's capacity (Redis: %s)", exc)
                    failing = True
                await asyncio.sleep(self._interval_s)
        finally:
            try:
                await asyncio.shield(self._redis.eval(WITHDRAW, 2, WORKERS, worker_key(self.id), self.id))
            except (RedisError, OSError, asyncio.CancelledError):
                pass
