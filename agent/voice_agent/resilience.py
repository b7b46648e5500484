"""Gemini Live connection faults that livekit-plugins-google 1.8.9 leaves to us.

The plugin reconnects with the latest session-resumption handle when a connection that
was up drops (1011, reset), up to 3 times. What it does not do, and this module adds
(the parts that touch no plugin internals are in model_faults.py):

* **Failed handshakes are retried.** The plugin treats a failed first connection, and a
  failed reconnect handshake, as fatal. :class:`_RetryingLive` wraps google-genai's
  ``live.connect`` so that every handshake (first or reconnect) is retried with
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
  fifth of a call's CPU.
* **The call hears about it.** :class:`ModelLinkListener` callbacks (connection lost,
  connected, a handshake failed, gave up) let the entrypoint play a filler clip, tell the
  caller in the transcript and write the call record.

Everything here subclasses or wraps the plugin's classes; the plugin is not forked. Where
that means touching the plugin's private members (``_client``, ``_bstream``,
``_mark_restart_needed``, ``_handle_go_away``, ``_msg_ch``, ...), it is done here only, for
the versions in :data:`TESTED_PLUGIN_VERSIONS`: :func:`check_plugin_version` refuses to start
on another one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.genai import types
from google.genai.version import __version__ as GENAI_VERSION
from livekit import rtc
from livekit.agents import llm, utils
from livekit.agents.utils import audio as audio_utils
from livekit.plugins import google
from livekit.plugins.google.realtime.realtime_api import INPUT_AUDIO_CHANNELS, INPUT_AUDIO_SAMPLE_RATE
from livekit.plugins.google.realtime.realtime_api import RealtimeSession as _PluginRealtimeSession
from livekit.plugins.google.version import __version__ as PLUGIN_VERSION
from websockets.exceptions import ConnectionClosed

from .model_faults import (
    ConnectFailure,
    FailureKind,
    ModelLinkListener,
    ModelUnavailableError,
    ReplayBuffer,
    RetryPolicy,
    Sent,
    classify_connect_error,
    parse_time_left,
)

__all__ = [
    "ConnectFailure", "FailureKind", "ModelLinkListener", "ModelUnavailableError", "ResilientRealtimeModel",
    "ResilientRealtimeSession", "RetryPolicy", "classify_connect_error", "parse_time_left",
]

logger = logging.getLogger("voice_agent.model")

#: Bytes per second of the plugin's input audio (16 kHz PCM16 mono).
_INPUT_BYTES_PER_S = INPUT_AUDIO_SAMPLE_RATE * 2 * INPUT_AUDIO_CHANNELS
_INPUT_MIME_TYPE = f"audio/pcm;rate={INPUT_AUDIO_SAMPLE_RATE}"
#: Added to round trip + loop lag when deciding what a resumption handle covers (s).
_IN_FLIGHT_MARGIN_S = 0.5
#: The WebSocket's round trip is measured this often (s), the loop's lag every tick (s).
_PING_EVERY_S = 2.0
_LAG_TICK_S = 0.05
#: livekit-plugins-google and google-genai versions whose private members this module relies
#: on, tested.
TESTED_PLUGIN_VERSIONS = ("1.8.9",)
TESTED_GENAI_VERSIONS = ("3.4.0",)


class UntestedPluginError(RuntimeError):
    """livekit-plugins-google or google-genai is a version this module was not tested with."""


def check_plugin_version(version: str = PLUGIN_VERSION, genai_version: str = GENAI_VERSION) -> None:
    """Refuse an untested livekit-plugins-google or google-genai before any call depends on it.

    Raises:
        UntestedPluginError: naming the installed and the tested versions.
    """
    for name, installed, tested in (
        ("livekit-plugins-google", version, TESTED_PLUGIN_VERSIONS),
        ("google-genai", genai_version, TESTED_GENAI_VERSIONS),
    ):
        if installed not in tested:
            raise UntestedPluginError(
                f"{name} {installed} is installed, but voice_agent/resilience.py was written and tested "
                f"against {', '.join(tested)} (it reaches into the plugin's session); install the pinned "
                "version from requirements.lock, or test this one and add it there"
            )


def audio_frame(blob: types.Blob) -> str:
    """The ``realtime_input`` audio frame google-genai 3.4 sends for `blob` (JSON text).

    Shape (``live.py`` ``send_realtime_input`` through ``_live_converters``; the same for
    the Gemini API and Vertex AI): ``{"realtime_input": {"audio": {"data": <URL-safe
    base64>, "mime_type": ...}}}``.
    """
    data = base64.urlsafe_b64encode(blob.data or b"").decode("ascii")
    return json.dumps({"realtime_input": {"audio": {"data": data, "mime_type": blob.mime_type}}})


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
            await self._inner._ws.send(audio_frame(audio))  # google-genai's own frame, built directly
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
        estimate (google-genai's ``AsyncSession._ws``: a websockets connection)."""
        ws = getattr(self._inner, "_ws", None)
        if ws is None:
            return
        # Cancellation must end the loop: `asyncio.wait_for` can swallow a cancel that lands as
        # the pong arrives (Python 3.11), and the task would ping on, holding `aclose` up.
        with contextlib.suppress(ConnectionClosed, RuntimeError, TimeoutError):
            while True:
                async with asyncio.timeout(10):
                    round_trip = await (await ws.ping())
                self._owner._note_round_trip(round_trip)
                await asyncio.sleep(every_s)

    async def replay(self, items: list[Sent]) -> None:
        for item in items:
            if item.kind == "realtime_input":
                await self.send_realtime_input(**item.kwargs)
            else:
                await self.send_client_content(**item.kwargs)


class _RetryingLive:
    """Stands in for ``client.aio.live``: ``connect()`` retries failed handshakes."""

    def __init__(self, inner: Any, owner: ResilientRealtimeSession) -> None:
        self._inner = inner
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.asynccontextmanager
    async def connect(self, *, model: str, config: types.LiveConnectConfig) -> AsyncIterator[_RecordingSession]:
        owner = self._owner
        policy = owner._policy
        attempt = 0
        first_failure_at: float | None = None
        while True:
            context = self._inner.connect(model=model, config=config)
            try:
                session = await asyncio.wait_for(context.__aenter__(), policy.connect_timeout_s)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify_connect_error(exc)
                now = time.monotonic()
                first_failure_at = first_failure_at if first_failure_at is not None else now
                delay = policy.delay(attempt, failure)
                out_of_time = now - first_failure_at + delay > policy.give_up_after_s
                if not failure.retryable or out_of_time:
                    logger.error(
                        "Gemini Live unavailable: %s (%s); giving up after %d attempt(s)",
                        failure.detail, failure.kind, attempt + 1,
                    )
                    owner._notify("on_model_connect_failed", failure, attempt=attempt, retry_in_s=None)
                    await owner._before_give_up()
                    raise ModelUnavailableError(failure, attempt + 1) from exc
                logger.warning(
                    "Gemini Live handshake failed: %s (%s); retry %d in %.1f s",
                    failure.detail, failure.kind, attempt + 1, delay,
                )
                owner._notify("on_model_connect_failed", failure, attempt=attempt, retry_in_s=delay)
                await asyncio.sleep(delay)
                attempt += 1
        recording = _RecordingSession(session, owner)
        try:
            await owner._on_connected(recording)
            yield recording
        except BaseException as exc:
            if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await context.__aexit__(None, None, None)


class _ClientWithRetryingLive:
    """Stands in for the plugin's ``genai.Client``: same object, ``aio.live`` wrapped."""

    def __init__(self, inner: Any, owner: ResilientRealtimeSession) -> None:
        self._inner = inner
        self.aio = _AioWithRetryingLive(inner.aio, owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AioWithRetryingLive:
    def __init__(self, inner: Any, owner: ResilientRealtimeSession) -> None:
        self._inner = inner
        self.live = _RetryingLive(inner.live, owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ResilientRealtimeSession(_PluginRealtimeSession):
    """The plugin's session with retried handshakes, replay after a drop and a patient GoAway."""

    def __init__(self, realtime_model: ResilientRealtimeModel) -> None:
        super().__init__(realtime_model)
        # The plugin's main task starts on the next loop iteration; swap the client before it does.
        self._client = _ClientWithRetryingLive(self._client, self)  # type: ignore[assignment]
        self._bstream = audio_utils.AudioByteStream(
            INPUT_AUDIO_SAMPLE_RATE,
            INPUT_AUDIO_CHANNELS,
            samples_per_channel=INPUT_AUDIO_SAMPLE_RATE * realtime_model.input_chunk_ms // 1000,
        )
        self._policy = realtime_model.retry_policy
        self._listeners = realtime_model.listeners
        self._input_taps = realtime_model.input_taps
        self._go_away_margin_s = realtime_model.go_away_margin_s
        self._replay = ReplayBuffer(limit_bytes=int(realtime_model.replay_limit_s * _INPUT_BYTES_PER_S))
        self._connections = 0
        self._go_away_task: asyncio.Task[None] | None = None
        # What the in-flight window is made of: recent round trips and this loop's lag.
        self._round_trips: deque[float] = deque(maxlen=3)
        self._lag_s = 0.0
        self._last_tick = time.monotonic()
        self._timing_tasks: list[asyncio.Task[None]] = []
        # A turn cut by a drop and replayed (see `_mark_current_generation_done`).
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

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        """The plugin's `push_audio`, with each chunk's message built without validation
        (`model_construct`: the fields are ours and known good; validating them was a tenth of
        a call's CPU)."""
        for resampled in self._resample_audio(frame):
            for chunk in self._bstream.write(resampled.data.tobytes()):
                data = chunk.data.tobytes()
                for tap in self._input_taps:
                    tap(data)
                blob = types.Blob.model_construct(data=data, mime_type=_INPUT_MIME_TYPE)
                self._send_client_event(types.LiveClientRealtimeInput.model_construct(audio=blob))

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, method)(*args, **kwargs)
            except Exception:
                logger.exception("model link listener %s failed", method)

    # ---- what a resumption handle surely covers ------------------------------------------

    def _note_round_trip(self, seconds: float) -> None:
        self._round_trips.append(seconds)

    async def _watch_loop_lag(self) -> None:
        """Keep a decaying maximum of how late this event loop runs (s)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(_LAG_TICK_S)
            self._last_tick = time.monotonic()
            self._lag_s = max(self._lag_s * 0.9, self._last_tick - before - _LAG_TICK_S)

    def _in_flight_s(self) -> float:
        """How long before now a message may have been sent and still not be covered by a
        handle read now: round trip + loop lag + a margin, seconds."""
        lag = max(self._lag_s, time.monotonic() - self._last_tick - _LAG_TICK_S)
        return _IN_FLIGHT_MARGIN_S + max(self._round_trips, default=0.0) + lag

    def _release_covered(self) -> None:
        self._replay.release_before(time.monotonic() - self._in_flight_s())

    # ---- a turn cut by a drop is answered, and recorded, once ----------------------------

    def _start_new_generation(self) -> None:
        super()._start_new_generation()
        self._generation_started_at = time.monotonic()

    def _mark_current_generation_done(self) -> None:
        generation = self._current_generation
        if generation is not None and not generation._done and self._drop_replayed_turn:
            # This generation answers the replay of a turn that was already committed (the
            # transcript, the record and the chat context have it): do not commit it again.
            generation.input_transcription = ""
            self._drop_replayed_turn = False
        elif generation is not None and not generation._done and generation.input_transcription:
            self._cut_turn_committed_at = self._generation_started_at
        super()._mark_current_generation_done()

    def _handle_server_content(self, server_content: types.LiveServerContent) -> None:
        if self._drop_replayed_turn and server_content.input_transcription is not None:
            server_content.input_transcription = None  # the replayed turn, already in the transcript
        super()._handle_server_content(server_content)

    # ---- connections ----------------------------------------------------------------------

    async def _on_connected(self, session: _RecordingSession) -> None:
        """Runs right after a handshake, before the plugin uses the session."""
        self._connections += 1
        first = self._connections == 1
        for task in self._timing_tasks:
            task.cancel()
        self._timing_tasks = [asyncio.create_task(session.measure_round_trips(_PING_EVERY_S), name="gemini-rtt"),
                              asyncio.create_task(self._watch_loop_lag(), name="gemini-loop-lag")]
        items = self._replay.take()
        cut = self._cut_turn_committed_at
        self._cut_turn_committed_at = None
        if items and not first:
            # A turn cut mid-reply by the drop was committed when its generation ended; its
            # audio is replayed now, and the answer's transcription must not commit it again.
            self._drop_replayed_turn = cut is not None and any(
                item.audio_bytes and item.at <= cut for item in items)
            if self._session_resumption_handle is not None:
                # The handle plus the replayed messages are the whole state: do not let the
                # plugin also re-send the chat items newer than the handle (they would be
                # answered twice, with tool results for calls the new session never made).
                target = self._pending_chat_ctx if self._pending_chat_ctx is not None else self._chat_ctx
                self._resumption_chat_ctx = llm.ChatContext(list(target.items))
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
                len(items), sum(i.audio_bytes for i in items) / _INPUT_BYTES_PER_S,
            )
        elif not first:
            logger.info("Gemini Live reconnected with the latest resumption handle")
        self._notify("on_model_connected", first=first, replayed_messages=len(items) if not first else 0)

    def _mark_restart_needed(self, on_error: bool = False) -> None:
        closing = self._session_should_close.is_set()
        old = self._msg_ch
        super()._mark_restart_needed(on_error=on_error)
        if on_error and not closing:
            # The plugin drops what was queued on the dead connection's channel; keep it.
            with contextlib.suppress(utils.aio.channel.ChanEmpty, utils.aio.channel.ChanClosed):
                while True:
                    self._msg_ch.send_nowait(old.recv_nowait())
            if not self._msg_ch.closed:
                self._notify("on_model_connection_lost", reason="connection dropped")

    def _handle_go_away(self, go_away: types.LiveServerGoAway) -> None:
        time_left = parse_time_left(go_away.time_left)
        logger.info("Gemini Live goAway: %s left; reconnecting at the next turn boundary", go_away.time_left)
        if self._go_away_task is None or self._go_away_task.done():
            self._go_away_task = asyncio.create_task(self._reconnect_at_turn_boundary(time_left))

    async def _reconnect_at_turn_boundary(self, time_left: float | None) -> None:
        budget = max(0.0, (time_left if time_left is not None else 0.0) - self._go_away_margin_s)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and self._generation_active():
            await asyncio.sleep(0.05)
        if self._msg_ch.closed or self._session_should_close.is_set():
            return
        self._notify("on_model_connection_lost", reason="goAway")
        self._session_should_close.set()

    def _generation_active(self) -> bool:
        generation = self._current_generation
        return generation is not None and not generation._done

    async def aclose(self) -> None:
        if self._go_away_task is not None:
            await utils.aio.cancel_and_wait(self._go_away_task)
        for task in self._timing_tasks:
            await utils.aio.cancel_and_wait(task)
        await super().aclose()


class ResilientRealtimeModel(google.realtime.RealtimeModel):
    """``google.realtime.RealtimeModel`` whose sessions survive connection faults.

    Args:
        retry_policy: backoff for failed handshakes.
        go_away_margin_s: reconnect this long before a GoAway's ``timeLeft`` runs out.
        replay_limit_s: at most this much audio (seconds) is kept for replay.
        input_chunk_ms: the caller's audio goes to the model in chunks this long (ms).
        **kwargs: the plugin's ``RealtimeModel`` arguments.

    Raises:
        UntestedPluginError: the installed plugin is not a tested version.
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
        check_plugin_version()
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

    def session(self, *, turn_detection_disabled: bool = False) -> ResilientRealtimeSession:
        sess = ResilientRealtimeSession(self)
        self._sessions.add(sess)
        return sess

