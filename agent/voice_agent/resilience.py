"""Gemini Live connection faults that livekit-plugins-google 1.8.9 leaves to us.

The plugin reconnects with the latest session-resumption handle when a connection that
was up drops (1011, reset), up to 3 times. What it does not do, and this module adds
(see ../shared/notes/gemini-live-protocol.md, "Gaps our agent must cover itself"):

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
  connection, so a turn cut by a drop is heard whole and answered once. The plugin's own
  re-send of chat items newer than the handle is skipped when replaying (the replay
  regenerates them), and tool results for calls made on a dead connection are dropped
  (the replayed turn makes the model call again).
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
import http
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from google.genai import errors as genai_errors
from google.genai import types
from google.genai.version import __version__ as GENAI_VERSION
from livekit import rtc
from livekit.agents import llm, utils
from livekit.agents.utils import audio as audio_utils
from livekit.plugins import google
from livekit.plugins.google.realtime.realtime_api import INPUT_AUDIO_CHANNELS, INPUT_AUDIO_SAMPLE_RATE
from livekit.plugins.google.realtime.realtime_api import RealtimeSession as _PluginRealtimeSession
from livekit.plugins.google.version import __version__ as PLUGIN_VERSION
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger("voice_agent.model")

#: Bytes per second of the plugin's input audio (16 kHz PCM16 mono).
_INPUT_BYTES_PER_S = INPUT_AUDIO_SAMPLE_RATE * 2 * INPUT_AUDIO_CHANNELS
_INPUT_MIME_TYPE = f"audio/pcm;rate={INPUT_AUDIO_SAMPLE_RATE}"
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


class FailureKind(StrEnum):
    """Why a Gemini Live handshake failed, in the caller's and operator's terms."""

    UNREACHABLE = "unreachable"  # refused, DNS, TLS, no answer in time
    AUTH = "auth"  # 401/403 or the key refused at setup
    QUOTA = "quota"  # 429 / RESOURCE_EXHAUSTED
    SERVER = "server"  # 5xx or an internal error during setup
    REJECTED = "rejected"  # anything else the server refused (bad model, bad request)


@dataclass(frozen=True)
class ConnectFailure:
    """A classified handshake failure.

    Attributes:
        kind: what went wrong.
        retryable: whether trying again later can help.
        detail: one line for the log (never the API key).
        retry_after_s: the server's Retry-After, if it sent one.
    """

    kind: FailureKind
    retryable: bool
    detail: str
    retry_after_s: float | None = None


_AUTH_WORDS = re.compile(r"api[ _]key|permission|unauthenticated|unauthori[sz]ed|credential", re.I)
_QUOTA_WORDS = re.compile(r"quota|resource[ _]exhausted|rate limit|too many", re.I)


def classify_connect_error(exc: BaseException) -> ConnectFailure:
    """Sort a handshake error into a :class:`ConnectFailure`.

    Handles what google-genai and websockets raise from ``live.connect``: ``InvalidStatus``
    (HTTP status at the upgrade), ``genai.errors.APIError`` (a close during setup, with
    the WebSocket close code and reason), ``OSError`` (refused, unreachable, TLS) and
    ``TimeoutError`` (no ``setupComplete`` in time).
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        phrase = _status_phrase(status)
        if status in (401, 403):
            return ConnectFailure(FailureKind.AUTH, False, f"HTTP {status} {phrase} at the handshake")
        if status == 429:
            return ConnectFailure(FailureKind.QUOTA, True, f"HTTP 429 {phrase} at the handshake", retry_after)
        if status >= 500:
            return ConnectFailure(FailureKind.SERVER, True, f"HTTP {status} {phrase} at the handshake", retry_after)
        return ConnectFailure(FailureKind.REJECTED, False, f"HTTP {status} {phrase} at the handshake")
    if isinstance(exc, genai_errors.APIError):
        reason = f"{exc.message or exc.status or ''}".strip()
        detail = f"closed during setup with {exc.code}: {reason[:160]}"
        if _QUOTA_WORDS.search(reason):
            return ConnectFailure(FailureKind.QUOTA, True, detail)
        if _AUTH_WORDS.search(reason):
            return ConnectFailure(FailureKind.AUTH, False, detail)
        if exc.code in (1006, 1011, 1012, 1013, 1014) or (isinstance(exc.code, int) and 500 <= exc.code < 600):
            return ConnectFailure(FailureKind.SERVER, True, detail)
        return ConnectFailure(FailureKind.REJECTED, False, detail)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailure(FailureKind.UNREACHABLE, False, f"TLS certificate not trusted: {getattr(exc, 'verify_message', None) or exc}")
    if isinstance(exc, TimeoutError):
        return ConnectFailure(FailureKind.UNREACHABLE, True, "no answer to the handshake in time")
    if isinstance(exc, (OSError, InvalidHandshake, ConnectionClosed)):
        return ConnectFailure(FailureKind.UNREACHABLE, True, f"{type(exc).__name__}: {exc}"[:200])
    return ConnectFailure(FailureKind.REJECTED, False, f"{type(exc).__name__}: {exc}"[:200])


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for handshakes.

    Attributes:
        first_delay_s: wait before the second attempt.
        max_delay_s: the longest wait between attempts.
        quota_min_delay_s: the shortest wait after a quota refusal (429).
        give_up_after_s: stop once this long has passed since the first failure.
        connect_timeout_s: one handshake (TCP, TLS, upgrade, setupComplete) may take this long.
    """

    first_delay_s: float = 0.25
    max_delay_s: float = 8.0
    quota_min_delay_s: float = 4.0
    give_up_after_s: float = 60.0
    connect_timeout_s: float = 10.0

    def delay(self, attempt: int, failure: ConnectFailure) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        delay = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        if failure.kind is FailureKind.QUOTA:
            delay = max(delay, self.quota_min_delay_s)
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, self.give_up_after_s))
        return delay


class ModelUnavailableError(Exception):
    """Gemini Live could not be reached (or refused us) and retrying stopped."""

    def __init__(self, failure: ConnectFailure, attempts: int) -> None:
        super().__init__(f"Gemini Live unavailable ({failure.kind}): {failure.detail}; {attempts} attempt(s)")
        self.failure = failure
        self.attempts = attempts


class ModelLinkListener(Protocol):
    """What the call wants to know about the model connection. Called on the job's loop."""

    def on_model_connected(self, *, first: bool, replayed_messages: int) -> None:
        """A connection is up (``first``: the call's first one)."""

    def on_model_connection_lost(self, *, reason: str) -> None:
        """The connection dropped or is being replaced (GoAway); a reconnect follows."""

    def on_model_connect_failed(self, failure: ConnectFailure, *, attempt: int, retry_in_s: float | None) -> None:
        """A handshake failed; ``retry_in_s`` is None when no retry follows."""


@dataclass
class _Sent:
    kind: str  # "realtime_input" | "client_content"
    kwargs: dict[str, Any]
    audio_bytes: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class _ReplayBuffer:
    """Client messages sent since the last resumption handle, to replay after a reconnect.

    A handle covers what the server had consumed when it issued it; messages still in
    flight then are not covered. Without Vertex's ``lastConsumedClientMessageIndex`` we
    cannot know which those are, so a handle releases only what was sent more than
    ``in_flight_s`` before it arrived (a replay may repeat that much audio, usually silence).
    """

    limit_bytes: int
    in_flight_s: float = 0.5
    items: list[_Sent] = field(default_factory=list)
    audio_bytes: int = 0

    def add(self, item: _Sent) -> None:
        self.items.append(item)
        self.audio_bytes += item.audio_bytes
        while self.audio_bytes > self.limit_bytes and self.items:
            dropped = self.items.pop(0)
            self.audio_bytes -= dropped.audio_bytes

    def take(self) -> list[_Sent]:
        items, self.items, self.audio_bytes = self.items, [], 0
        return items

    def clear(self) -> None:
        self.items, self.audio_bytes = [], 0

    def release_before(self, at: float) -> None:
        """A handle arrived at ``at``: forget what it surely covers."""
        cutoff = at - self.in_flight_s
        keep = [item for item in self.items if item.at >= cutoff]
        self.items, self.audio_bytes = keep, sum(item.audio_bytes for item in keep)


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
            self._owner._replay.add(_Sent("realtime_input", kwargs, size))
        if isinstance(audio, types.Blob) and len(kwargs) == 1:
            await self._inner._ws.send(audio_frame(audio))  # google-genai's own frame, built directly
        else:
            await self._inner.send_realtime_input(**kwargs)

    async def send_client_content(self, **kwargs: Any) -> None:
        self._owner._replay.add(_Sent("client_content", kwargs))
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
                self._owner._replay.release_before(time.monotonic())
            elif (
                message.server_content is not None
                and message.server_content.turn_complete
                and self._owner.session_resumption_handle is None
            ):
                # No handle yet: the plugin rebuilds a new connection from its chat context,
                # which holds every completed turn; only the turn in progress needs replaying.
                self._owner._replay.release_before(time.monotonic())
            yield message

    async def replay(self, items: list[_Sent]) -> None:
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


def parse_time_left(value: str | None) -> float | None:
    """Seconds in a protobuf Duration string such as ``"5s"`` or ``"59.5s"``; None if unparsable."""
    if not value:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*s?\s*", value)
    return float(match.group(1)) if match else None


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
        self._replay = _ReplayBuffer(limit_bytes=int(realtime_model.replay_limit_s * _INPUT_BYTES_PER_S))
        self._connections = 0
        self._go_away_task: asyncio.Task[None] | None = None

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

    async def _on_connected(self, session: _RecordingSession) -> None:
        """Runs right after a handshake, before the plugin uses the session."""
        self._connections += 1
        first = self._connections == 1
        items = self._replay.take()
        if items and not first:
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


#: Callable form used by tests to build listeners from plain functions.
ListenerCallback = Callable[..., None]
