"""What the caller hears and sees while the model link is down.

The model cannot speak while it is disconnected, so the agent plays a pre-rendered clip
itself ("One moment, please.", `clips/one_moment.wav`) when a reconnect takes longer than
`filler_after_s`, and again every `filler_repeat_s` while the model stays away (with a
"still trying" line in the transcript the first time), so a long outage is never silence.
When retrying stops during a call, the caller hears why (`clips/give_up.wav`) before the
call ends, and reads it in the transcript. `CallLink` is the `ModelLinkListener`
(resilience.py) of one call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from livekit import rtc
from voice_calls import logs

from .model_faults import ConnectFailure, FailureKind

logger = logging.getLogger("voice_agent")

FILLER_TEXT = "One moment, please."
#: Spoken (pre-rendered) when the model is given up on during a call.
GIVE_UP_TEXT = "Sorry, I can't reach my voice service right now. Please call again later."
#: What the caller reads once an outage goes on past the first filler.
HOLDING_MESSAGE = "I'm still trying to reach the voice service. Please hold on."
#: What the caller reads while the first connection is being retried.
RETRYING_MESSAGES = {
    FailureKind.QUOTA: "The voice service is busy right now. Please hold on, I'm trying again.",
}
RETRYING_DEFAULT = "I'm having trouble reaching the voice service. Please hold on, I'm trying again."
#: What the caller reads when no connection could be made.
GAVE_UP_MESSAGES = {
    FailureKind.AUTH: "Sorry, the assistant can't answer right now: its voice service refused its "
    "credentials. Please try again later.",
    FailureKind.QUOTA: "Sorry, the voice service is too busy right now. Please try again in a few minutes.",
    FailureKind.REJECTED: "Sorry, the assistant is misconfigured and can't answer right now. Please try again later.",
}
GAVE_UP_DEFAULT = "Sorry, the assistant can't reach its voice service right now. Please try again later."
LOST_MESSAGE = "Sorry, the connection to the voice service was lost. Please call again."

#: Frame length of the filler clip as it is played, ms.
_FRAME_MS = 20


@functools.lru_cache(maxsize=4)
def load_clip(path: Path) -> tuple[int, bytes]:
    """(sample rate, PCM16 mono bytes) of a WAV clip.

    Raises:
        OSError, wave.Error: unreadable file; ValueError: not mono 16-bit.
    """
    with wave.open(str(path), "rb") as clip:
        if clip.getnchannels() != 1 or clip.getsampwidth() != 2:
            raise ValueError(f"{path}: the filler clip must be mono 16-bit PCM")
        return clip.getframerate(), clip.readframes(clip.getnframes())


async def clip_frames(path: Path) -> AsyncIterator[rtc.AudioFrame]:
    """The clip as 20 ms audio frames (for `AgentSession.say(audio=...)`)."""
    rate, pcm = load_clip(path)
    step = rate * _FRAME_MS // 1000 * 2
    for offset in range(0, len(pcm), step):
        chunk = pcm[offset : offset + step]
        yield rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2)


class CallLink:
    """Turns model-link events into what the caller experiences, and keeps the facts.

    Args:
        tell: show a line in the caller's transcript.
        play_filler: play the filler clip (the agent's own audio).
        filler_after_s: how long the model may be away before the filler plays, seconds.
        filler_repeat_s: while it stays away, the filler plays again this often, seconds.
        play_give_up: say the give-up clip; returns once it has played.
        on_event: optional `(name, fields)` sink (the call record).
    """

    def __init__(
        self,
        *,
        tell: Callable[[str], Awaitable[None]],
        play_filler: Callable[[], None],
        filler_after_s: float,
        filler_repeat_s: float = 8.0,
        play_give_up: Callable[[], Awaitable[None]] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._tell = tell
        self._play_filler = play_filler
        self._filler_after_s = filler_after_s
        self._filler_repeat_s = filler_repeat_s
        self._play_give_up = play_give_up
        self._on_event = on_event or (lambda _name, _fields: None)
        self.connected = asyncio.Event()
        self.ready_or_failed = asyncio.Event()
        self.gave_up: ConnectFailure | None = None
        self.down_since: float | None = None
        self.recovered = False  # the link came back after a loss at least once
        self._told_retrying = False
        self._filler_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait for the first connection; False when it failed for good or took too long."""
        try:
            await asyncio.wait_for(self.ready_or_failed.wait(), timeout)
        except TimeoutError:
            return False
        return self.gave_up is None and self.connected.is_set()

    # ---- ModelLinkListener ------------------------------------------------------------

    def on_model_connected(self, *, first: bool, replayed_messages: int) -> None:
        self.connected.set()
        self.ready_or_failed.set()
        self._cancel_filler()
        if self.down_since is not None:
            outage = time.monotonic() - self.down_since
            self.recovered = True
            self.down_since = None
            logger.info("model link back after %.2f s (%d message(s) replayed)", outage, replayed_messages,
                        extra={logs.EVENT: "model_reconnected"})
            self._on_event("model_reconnected", {"outage_s": round(outage, 3), "replayed": replayed_messages})
        elif first:
            logger.info("model link up", extra={logs.EVENT: logs.MODEL_CONNECTED})
            self._on_event(logs.MODEL_CONNECTED, {})

    def on_model_connection_lost(self, *, reason: str) -> None:
        self.connected.clear()
        if self.down_since is None:
            self.down_since = time.monotonic()
        logger.warning("model link down (%s); reconnecting", reason, extra={logs.EVENT: "model_link_lost"})
        self._on_event("model_link_lost", {"reason": reason})
        self._schedule_filler()

    def on_model_connect_failed(self, failure: ConnectFailure, *, attempt: int, retry_in_s: float | None) -> None:
        self._on_event(
            "model_connect_failed",
            {"kind": str(failure.kind), "detail": failure.detail, "attempt": attempt, "retry_in_s": retry_in_s},
        )
        if retry_in_s is None:
            self.gave_up = failure
            self.ready_or_failed.set()
            self._cancel_filler()
            return
        if self.down_since is None and not self.connected.is_set() and not self._told_retrying:
            # The call's first connection: say once that we are still trying.
            self._told_retrying = True
            self._spawn(self._tell(RETRYING_MESSAGES.get(failure.kind, RETRYING_DEFAULT)))
            self._schedule_filler()

    # ---- helpers ------------------------------------------------------------------------

    def gave_up_message(self) -> str:
        """The transcript line for a model that could not be reached: lost mid-call (it had
        answered this call), or never reached (why, by the kind of failure)."""
        if self.gave_up is None or self.recovered or self.down_since is not None:
            return LOST_MESSAGE
        return GAVE_UP_MESSAGES.get(self.gave_up.kind, GAVE_UP_DEFAULT)

    def _schedule_filler(self) -> None:
        if self._filler_task is None or self._filler_task.done():
            self._filler_task = asyncio.create_task(self._filler_after_delay())

    async def _filler_after_delay(self) -> None:
        await asyncio.sleep(self._filler_after_s)
        played = 0
        while not self.connected.is_set() and self.gave_up is None:
            logger.info("model still away after %.1f s: playing the filler",
                        self._filler_after_s + played * self._filler_repeat_s)
            self._on_event("filler_played", {"repeat": played})
            self._play_filler()
            if played == 1:
                self._spawn(self._tell(HOLDING_MESSAGE))
            played += 1
            await asyncio.sleep(self._filler_repeat_s)

    async def before_give_up(self) -> None:
        """Retrying stops now: during a call, say so aloud before the call ends."""
        self._cancel_filler()
        if self.recovered or self.down_since is not None:  # the model had answered this call
            if self._play_give_up is not None:
                self._on_event("give_up_played", {})
                await self._play_give_up()

    def _cancel_filler(self) -> None:
        if self._filler_task is not None and not self._filler_task.done():
            self._filler_task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        self._cancel_filler()
        for task in list(self._tasks):
            task.cancel()
