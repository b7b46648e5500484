"""Gemini Live connection faults that livekit-plugins-google 1.8.9 leaves to us.

The plugin reconnects with the latest session-resumption handle when a connection that
was up drops (1011, reset), up to 3 times. What it does not do, and this module adds (the
pure retry, backoff and replay logic is model_faults.py; the plugin's internals are reached
only through plugin_adapter.py's public hooks):

* **Failed handshakes are retried.** The plugin treats a failed first connection, and a
  failed reconnect handshake, as fatal. :meth:`ResilientRealtimeSession.connect_live`
  wraps google-genai's ``live.connect`` so that every handshake (first or reconnect) is retried with
  exponential backoff while the failure is worth retrying (refused, unreachable, stalled,
  HTTP 429 / 5xx, a 1011 close during setup); a bad key (401/403, or a setup closed for
  an invalid key) fails at once. :func:`classify_connect_error` makes that call.
* **Nothing the caller said is lost.** A resumption handle restores the session as it
  was when the handle was issued; client messages sent after it are not part of it (the
  API docs: "buffer messages sent since the last SessionResumptionUpdate"; the
  ``transparent`` index is Vertex-only). :class:`_RecordingSession` keeps the audio and
  text turns sent since the last handle and replays them, in order, on the new
  connection, so a turn cut by a drop is heard whole and answered once. A handle frees
  only what it surely covers: what was sent more than the measured round trip plus this
  loop's lag (plus a margin) before it was read, so a slow link or a stalled loop loses
  nothing. The plugin's own re-send of chat items newer than the handle is skipped when
  replaying (the replay regenerates them), tool results for calls made on a dead
  connection are dropped (the replayed turn makes the model call again), and a turn that
  was committed when the drop cut its reply is not committed again when its replay is
  transcribed: the transcript, the record and the next agent see it once.
* **GoAway waits for a turn boundary.** The plugin reconnects at once on ``goAway``,
  cutting a reply mid-sentence; here the reconnect waits until the current reply is done
  or ``timeLeft`` minus a safety margin, whichever comes first.
* **Audio reaches the model sooner, for less.** The plugin sends the caller's audio in 50 ms
  chunks; :class:`ResilientRealtimeSession` sends ``input_chunk_ms`` chunks instead (20 ms by
  default), so a turn's first and last audio leave up to 30 ms earlier. Each chunk is written
  as the very frame google-genai would build (:func:`audio_frame`, pinned by a test against
  google-genai's own ``send_realtime_input``) without its pydantic round trip, which was a
  fifth of a call's CPU (plugin_adapter.py).
* **The call hears about it.** :class:`ModelLinkListener` callbacks (connection lost,
  connected, a handshake failed, gave up) let the entrypoint play a filler clip, tell the
  caller in the transcript and write the call record.

Nothing here names a private member of livekit-agents, its plugins or google-genai: the
session subclasses plugin_adapter.AdaptedRealtimeSession and uses its hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.genai import types
from livekit.agents import utils
from websockets.exceptions import ConnectionClosed

from . import plugin_adapter
from .model_faults import (
    ConnectFailure,
    FailureKind,
    InFlightWindow,
    ModelLinkListener,
    ModelUnavailableError,
    ReplayBuffer,
    RetryPolicy,
    Sent,
    classify_connect_error,
    open_with_retry,
    parse_time_left,
)
from .plugin_adapter import INPUT_BYTES_PER_S, AdaptedRealtimeModel, AdaptedRealtimeSession

__all__ = [
    "ConnectFailure", "FailureKind", "ModelLinkListener", "ModelUnavailableError", "ResilientRealtimeModel",
    "ResilientRealtimeSession", "RetryPolicy", "classify_connect_error", "parse_time_left",
]

logger = logging.getLogger("voice_agent.model")

#: The WebSocket's round trip is measured this often (s).
_PING_EVERY_S = 2.0


class _RecordingSession:
    """A google-genai ``AsyncSession`` that remembers what is sent after the last handle.

    It also remembers the tool calls made on this connection, so a tool result for a
    call made on an earlier (dead) connection is dropped instead of confusing this one.
    """

    def __init__(self, inner: Any, owner: ResilientRealtimeSession) -> None:
        self._inner = inner
        self._owner = owner
        self._call_ids: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    # Kept before sending: a message whose send fails on a dying socket is replayed too.
    async def send_realtime_input(self, **kwargs: Any) -> None:
        audio = kwargs.get("audio")
        size = len(audio.data or b"") if isinstance(audio, types.Blob) else 0
        if kwargs.get("video") is None:
            self._owner._replay.add(Sent("realtime_input", kwargs, size))
        if isinstance(audio, types.Blob) and len(kwargs) == 1:
            await plugin_adapter.send_audio(self._inner, audio)
        else:
            await self._inner.send_realtime_input(**kwargs)

    async def send_client_content(self, **kwargs: Any) -> None:
        self._owner._replay.add(Sent("client_content", kwargs))
        await self._inner.send_client_content(**kwargs)

    async def send_tool_response(self, *, function_responses: Any) -> None:
        responses = list(function_responses or [])
        live = [r for r in responses if not getattr(r, "id", None) or r.id in self._call_ids]
        if len(live) < len(responses):
            stale = [r.id for r in responses if r not in live]
            logger.info("dropping tool results for calls made on an earlier connection: %s", stale)
        if live:
            await self._inner.send_tool_response(function_responses=live)

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        async for message in self._inner.receive():
            if message.tool_call is not None:
                self._call_ids.update(c.id for c in message.tool_call.function_calls or [] if c.id)
            update = message.session_resumption_update
            if update is not None and update.resumable and update.new_handle:
                self._owner._release_covered()
            elif (
                message.server_content is not None
                and message.server_content.turn_complete
                and self._owner.session_resumption_handle is None
            ):
                # No handle yet: the plugin rebuilds a new connection from its chat context,
                # which holds every completed turn; only the turn in progress needs replaying.
                self._owner._release_covered()
            yield message

    async def measure_round_trips(self, every_s: float) -> None:
        """Ping the WebSocket every `every_s` while it is open; keeps the owner's round-trip
        estimate."""
        ws = plugin_adapter.websocket(self._inner)
        if ws is None:
            return
        # Cancellation must end the loop: `asyncio.wait_for` can swallow a cancel that lands as
        # the pong arrives (Python 3.11), and the task would ping on, holding `aclose` up.
        with contextlib.suppress(ConnectionClosed, RuntimeError, TimeoutError):
            while True:
                async with asyncio.timeout(10):
                    round_trip = await (await ws.ping())
                self._owner._in_flight.note_round_trip(round_trip)
                await asyncio.sleep(every_s)

    async def replay(self, items: list[Sent]) -> None:
        for item in items:
            if item.kind == "realtime_input":
                await self.send_realtime_input(**item.kwargs)
            else:
                await self.send_client_content(**item.kwargs)


class ResilientRealtimeSession(AdaptedRealtimeSession):
    """The plugin's session with retried handshakes, replay after a drop and a patient GoAway."""

    def __init__(self, realtime_model: ResilientRealtimeModel) -> None:
        super().__init__(
            realtime_model,
            input_chunk_ms=realtime_model.input_chunk_ms,
            input_taps=realtime_model.input_taps,
            go_away_margin_s=realtime_model.go_away_margin_s,
        )
        self._policy = realtime_model.retry_policy
        self._listeners = realtime_model.listeners
        self._replay = ReplayBuffer(limit_bytes=int(realtime_model.replay_limit_s * INPUT_BYTES_PER_S))
        self._in_flight = InFlightWindow()
        self._connections = 0
        self._timing_tasks: list[asyncio.Task[None]] = []
        # A turn cut by a drop and replayed (see `commit_input_transcription`).
        self._generation_started_at = 0.0
        self._cut_turn_committed_at: float | None = None
        self._drop_replayed_turn = False

    async def _before_give_up(self) -> None:
        """Let listeners finish what they say before the session ends (at most 15 s)."""
        waits = [listener.before_give_up() for listener in list(self._listeners)
                 if hasattr(listener, "before_give_up")]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 15.0)

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, method)(*args, **kwargs)
            except Exception:
                logger.exception("model link listener %s failed", method)

    def _release_covered(self) -> None:
        """Forget what the resumption handle just read surely covers."""
        self._replay.release_before(time.monotonic() - self._in_flight.seconds())

    # ---- a turn cut by a drop is answered, and recorded, once ----------------------------

    def on_generation_started(self) -> None:
        self._generation_started_at = time.monotonic()

    def commit_input_transcription(self, transcript: str) -> bool:
        if self._drop_replayed_turn:
            # This generation answers the replay of a turn that was already committed (the
            # transcript, the record and the chat context have it): do not commit it again.
            self._drop_replayed_turn = False
            return False
        if transcript:
            self._cut_turn_committed_at = self._generation_started_at
        return True

    def accept_input_transcription(self) -> bool:
        return not self._drop_replayed_turn  # the replayed turn is already in the transcript

    # ---- connections ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect_live(self, live: Any, *, model: str, config: types.LiveConnectConfig) -> AsyncIterator[Any]:
        """Every handshake, retried with backoff (model_faults.open_with_retry); the session
        yielded records what is sent, for a replay on the next connection."""

        async def open_once() -> tuple[Any, Any]:
            context = live.connect(model=model, config=config)
            return context, await context.__aenter__()

        context, session = await open_with_retry(
            open_once, self._policy,
            on_failure=lambda failure, attempt, retry_in_s: self._notify(
                "on_model_connect_failed", failure, attempt=attempt, retry_in_s=retry_in_s),
            before_give_up=self._before_give_up,
        )
        recording = _RecordingSession(session, self)
        try:
            await self._on_connected(recording)
            yield recording
        except BaseException as exc:
            if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await context.__aexit__(None, None, None)

    async def _on_connected(self, session: _RecordingSession) -> None:
        """Runs right after a handshake, before the plugin uses the session."""
        self._connections += 1
        first = self._connections == 1
        for task in self._timing_tasks:
            task.cancel()
        self._timing_tasks = [asyncio.create_task(session.measure_round_trips(_PING_EVERY_S), name="gemini-rtt"),
                              asyncio.create_task(self._in_flight.watch_loop_lag(), name="gemini-loop-lag")]
        items = self._replay.take()
        cut = self._cut_turn_committed_at
        self._cut_turn_committed_at = None
        if items and not first:
            # A turn cut mid-reply by the drop was committed when its generation ended; its
            # audio is replayed now, and the answer's transcription must not commit it again.
            self._drop_replayed_turn = cut is not None and any(
                item.audio_bytes and item.at <= cut for item in items)
            # The handle plus the replayed messages are the whole state: the chat items newer
            # than the handle would be answered twice, with tool results for calls the new
            # session never made.
            self.resend_nothing_after_handle()
            try:
                await session.replay(items)
            except Exception as exc:
                # The new connection died at once; the plugin's tasks will see it and
                # reconnect again. Keep the messages for that next connection.
                logger.warning("replay after reconnect failed: %s", exc)
                self._replay.clear()  # drop the partial re-recording; keep the whole list
                for item in items:
                    self._replay.add(item)
                return
            logger.info(
                "Gemini Live reconnected; replayed %d message(s) (%.1f s of audio) sent since the last handle",
                len(items), sum(i.audio_bytes for i in items) / INPUT_BYTES_PER_S,
            )
        elif not first:
            logger.info("Gemini Live reconnected with the latest resumption handle")
        self._notify("on_model_connected", first=first, replayed_messages=len(items) if not first else 0)

    def on_connection_lost(self, *, reason: str) -> None:
        self._notify("on_model_connection_lost", reason=reason)

    async def aclose(self) -> None:
        for task in self._timing_tasks:
            await utils.aio.cancel_and_wait(task)
        await super().aclose()


class ResilientRealtimeModel(AdaptedRealtimeModel):
    """``google.realtime.RealtimeModel`` whose sessions survive connection faults.

    Args:
        retry_policy: backoff for failed handshakes.
        go_away_margin_s: reconnect this long before a GoAway's ``timeLeft`` runs out.
        replay_limit_s: at most this much audio (seconds) is kept for replay.
        input_chunk_ms: the caller's audio goes to the model in chunks this long (ms).
        **kwargs: the plugin's ``RealtimeModel`` arguments.

    Raises:
        plugin_adapter.UntestedVersionError: an installed library is not a tested version.
    """

    def __init__(
        self,
        *,
        retry_policy: RetryPolicy | None = None,
        go_away_margin_s: float = 2.0,
        replay_limit_s: float = 30.0,
        input_chunk_ms: int = 20,
        **kwargs: Any,
    ) -> None:
        plugin_adapter.check_versions()
        super().__init__(**kwargs)
        self.input_chunk_ms = input_chunk_ms
        self.retry_policy = retry_policy or RetryPolicy()
        self.go_away_margin_s = go_away_margin_s
        self.replay_limit_s = replay_limit_s
        self.listeners: list[ModelLinkListener] = []
        self.input_taps: list[Callable[[bytes], None]] = []

    def add_listener(self, listener: ModelLinkListener) -> None:
        """Register for connection events of every session of this model."""
        self.listeners.append(listener)

    def add_input_tap(self, tap: Callable[[bytes], None]) -> None:
        """Call `tap` with each chunk of the caller's audio sent to the model (16 kHz PCM16
        mono, `input_chunk_ms` long), on the job's loop; it must be quick."""
        self.input_taps.append(tap)

    def new_session(self) -> ResilientRealtimeSession:
        return ResilientRealtimeSession(self)
