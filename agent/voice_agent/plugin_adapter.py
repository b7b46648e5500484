"""The one module that touches private members of livekit-plugins-google and google-genai.

livekit-plugins-google 1.8.9's ``RealtimeSession`` has no public hooks for what resilience.py
adds (retried handshakes, replay after a drop, a patient GoAway, smaller audio chunks), so
this module subclasses it, overrides its private methods and reads its private state, and
turns them into a small public surface that resilience.py builds on:

* :meth:`AdaptedRealtimeSession.connect_live`: every handshake (first or reconnect) goes
  through it (the plugin's ``_client.aio.live.connect``);
* :meth:`~AdaptedRealtimeSession.on_generation_started`,
  :meth:`~AdaptedRealtimeSession.commit_input_transcription`,
  :meth:`~AdaptedRealtimeSession.accept_input_transcription`: a model turn's start and end
  (``_start_new_generation``, ``_mark_current_generation_done``, ``_handle_server_content``);
* :meth:`~AdaptedRealtimeSession.on_connection_lost`: a drop (``_mark_restart_needed``) or a
  GoAway reconnect (``_handle_go_away``);
* :meth:`~AdaptedRealtimeSession.resend_nothing_after_handle`: the plugin's re-send of chat
  items newer than the resumption handle is skipped (``_resumption_chat_ctx``);
* :func:`send_audio` and :func:`websocket`: google-genai's ``AsyncSession._ws``.

Two behaviours here belong upstream and are written in the plugin's own terms so they could
be proposed there as they are: queued client messages survive a dropped connection
(``_mark_restart_needed``), and a GoAway reconnects at the next turn boundary
(``_reconnect_at_turn_boundary``); the handshake retry is model_faults.open_with_retry.

Each private member used is pinned by agent/tests/test_plugin_adapter.py, so an upgrade
fails a test, not a call; :func:`check_versions` refuses, at worker start-up, a
livekit-agents, livekit-plugins-google or google-genai other than :data:`TESTED_VERSIONS`
(the pins of requirements.lock).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from importlib import metadata
from typing import Any

from google.genai import types
from livekit import rtc
from livekit.agents import llm, utils
from livekit.agents.utils import audio as audio_utils
from livekit.plugins import google
from livekit.plugins.google.realtime.realtime_api import INPUT_AUDIO_CHANNELS, INPUT_AUDIO_SAMPLE_RATE
from livekit.plugins.google.realtime.realtime_api import RealtimeSession as _PluginRealtimeSession

from .model_faults import parse_time_left

logger = logging.getLogger("voice_agent.model")

#: The versions whose private members this module relies on, tested (requirements.lock's pins;
#: a test keeps the two equal).
TESTED_VERSIONS: Mapping[str, tuple[str, ...]] = {
    "livekit-agents": ("1.8.9",),
    "livekit-plugins-google": ("1.8.9",),
    "google-genai": ("3.4.0",),
}
#: Bytes per second of the plugin's input audio (16 kHz PCM16 mono).
INPUT_BYTES_PER_S = INPUT_AUDIO_SAMPLE_RATE * 2 * INPUT_AUDIO_CHANNELS
_INPUT_MIME_TYPE = f"audio/pcm;rate={INPUT_AUDIO_SAMPLE_RATE}"


class UntestedVersionError(RuntimeError):
    """An installed library is a version this adapter was not tested with."""


def installed_versions() -> dict[str, str]:
    """The installed version of each library in :data:`TESTED_VERSIONS`, by distribution name."""
    return {name: metadata.version(name) for name in TESTED_VERSIONS}


def check_versions(installed: Mapping[str, str] | None = None) -> None:
    """Refuse untested versions before any call depends on them.

    Args:
        installed: versions by distribution name; default: what is installed.
    Raises:
        UntestedVersionError: one line naming the installed and the tested versions.
    """
    installed = installed_versions() if installed is None else installed
    for name, tested in TESTED_VERSIONS.items():
        version = installed.get(name)
        if version not in tested:
            raise UntestedVersionError(
                f"{name} {version} is installed, but voice_agent/plugin_adapter.py was written and tested "
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


async def send_audio(session: Any, blob: types.Blob) -> None:
    """Send `blob` on a google-genai ``AsyncSession`` as the very frame it would build, without
    its pydantic round trip (a fifth of a call's CPU)."""
    await session._ws.send(audio_frame(blob))


def websocket(session: Any) -> Any:
    """The websockets connection under a google-genai ``AsyncSession`` (None if it has none)."""
    return getattr(session, "_ws", None)


class _Proxy:
    """Forwards every attribute it does not define to `inner`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Live(_Proxy):
    """Stands in for ``client.aio.live``: ``connect()`` goes through the session's `connect_live`."""

    def __init__(self, inner: Any, session: AdaptedRealtimeSession) -> None:
        super().__init__(inner)
        self._session = session

    def connect(self, *, model: str, config: types.LiveConnectConfig) -> AbstractAsyncContextManager[Any]:
        return self._session.connect_live(self._inner, model=model, config=config)


class _Aio(_Proxy):
    def __init__(self, inner: Any, session: AdaptedRealtimeSession) -> None:
        super().__init__(inner)
        self.live = _Live(inner.live, session)


class _Client(_Proxy):
    """Stands in for the plugin's ``genai.Client``: the same object, ``aio.live`` wrapped."""

    def __init__(self, inner: Any, session: AdaptedRealtimeSession) -> None:
        super().__init__(inner)
        self.aio = _Aio(inner.aio, session)


class AdaptedRealtimeSession(_PluginRealtimeSession):
    """The plugin's ``RealtimeSession`` with public hooks in place of its private methods.

    The ``on_*``/``*_input_transcription``/``connect_live`` methods keep the plugin's
    behaviour until a subclass overrides them.

    Args:
        realtime_model: the plugin's model.
        input_chunk_ms: the caller's audio goes to the model in chunks this long (ms; the
            plugin's own: 50).
        input_taps: each called with every chunk sent (16 kHz PCM16 mono bytes), on the loop.
        go_away_margin_s: after a GoAway, reconnect this long before its ``timeLeft`` runs out
            if the model is still speaking.
    """

    def __init__(
        self,
        realtime_model: google.realtime.RealtimeModel,
        *,
        input_chunk_ms: int = 50,
        input_taps: list[Callable[[bytes], None]] | None = None,
        go_away_margin_s: float = 2.0,
    ) -> None:
        super().__init__(realtime_model)
        # The plugin's main task starts on the next loop iteration; swap the client before it does.
        self._client = _Client(self._client, self)  # type: ignore[assignment]
        self._bstream = audio_utils.AudioByteStream(
            INPUT_AUDIO_SAMPLE_RATE, INPUT_AUDIO_CHANNELS,
            samples_per_channel=INPUT_AUDIO_SAMPLE_RATE * input_chunk_ms // 1000,
        )
        self._adapter_input_taps = input_taps if input_taps is not None else []
        self._adapter_go_away_margin_s = go_away_margin_s
        self._adapter_go_away_task: asyncio.Task[None] | None = None

    # ---- hooks for subclasses (default: the plugin's behaviour) ---------------------------

    def connect_live(self, live: Any, *, model: str, config: types.LiveConnectConfig) -> AbstractAsyncContextManager[Any]:
        """Open a Gemini Live connection with google-genai's ``live`` (an async context manager
        yielding an ``AsyncSession``); the plugin's main task uses what it yields."""
        return live.connect(model=model, config=config)

    def on_generation_started(self) -> None:
        """A model turn (generation) started."""

    def commit_input_transcription(self, transcript: str) -> bool:
        """A model turn ends; False: do not commit the caller's `transcript` (transcript event,
        chat context) that it answered."""
        return True

    def accept_input_transcription(self) -> bool:
        """False: ignore the input transcription in the server content being read."""
        return True

    def on_connection_lost(self, *, reason: str) -> None:
        """The connection dropped ("connection dropped") or is being replaced ("goAway"); the
        plugin reconnects next."""

    # ---- what subclasses may read or ask --------------------------------------------------

    @property
    def generation_active(self) -> bool:
        """A model turn is in progress (not yet done)."""
        generation = self._current_generation
        return generation is not None and not generation._done

    @property
    def closing(self) -> bool:
        """The session is closed, or its connection is being restarted."""
        return self._msg_ch.closed or self._session_should_close.is_set()

    def resend_nothing_after_handle(self) -> None:
        """On the coming resumption, do not let the plugin re-send the chat items newer than the
        handle (the caller replays what the handle does not cover itself)."""
        if self._session_resumption_handle is not None:
            target = self._pending_chat_ctx if self._pending_chat_ctx is not None else self._chat_ctx
            self._resumption_chat_ctx = llm.ChatContext(list(target.items))

    # ---- the plugin's private methods -----------------------------------------------------

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        """The plugin's `push_audio` in `input_chunk_ms` chunks, each message built without
        validation (`model_construct`: the fields are known good; validating them was a tenth
        of a call's CPU)."""
        for resampled in self._resample_audio(frame):
            for chunk in self._bstream.write(resampled.data.tobytes()):
                data = chunk.data.tobytes()
                for tap in self._adapter_input_taps:
                    tap(data)
                blob = types.Blob.model_construct(data=data, mime_type=_INPUT_MIME_TYPE)
                self._send_client_event(types.LiveClientRealtimeInput.model_construct(audio=blob))

    def _start_new_generation(self) -> None:
        super()._start_new_generation()
        self.on_generation_started()

    def _mark_current_generation_done(self) -> None:
        generation = self._current_generation
        if generation is not None and not generation._done:
            if not self.commit_input_transcription(generation.input_transcription):
                generation.input_transcription = ""
        super()._mark_current_generation_done()

    def _handle_server_content(self, server_content: types.LiveServerContent) -> None:
        if server_content.input_transcription is not None and not self.accept_input_transcription():
            server_content.input_transcription = None
        super()._handle_server_content(server_content)

    def _mark_restart_needed(self, on_error: bool = False) -> None:
        """The plugin's, except that after an error the messages queued for the dead connection
        go to the next one instead of being dropped (proposable upstream)."""
        closing = self._session_should_close.is_set()
        old = self._msg_ch
        super()._mark_restart_needed(on_error=on_error)
        if on_error and not closing:
            with contextlib.suppress(utils.aio.channel.ChanEmpty, utils.aio.channel.ChanClosed):
                while True:
                    self._msg_ch.send_nowait(old.recv_nowait())
            if not self._msg_ch.closed:
                self.on_connection_lost(reason="connection dropped")

    def _handle_go_away(self, go_away: types.LiveServerGoAway) -> None:
        """The plugin reconnects at once, cutting a reply mid-sentence; here the reconnect
        waits for the turn boundary (proposable upstream)."""
        logger.info("Gemini Live goAway: %s left; reconnecting at the next turn boundary", go_away.time_left)
        task = self._adapter_go_away_task
        if task is None or task.done():
            self._adapter_go_away_task = asyncio.create_task(
                self._reconnect_at_turn_boundary(parse_time_left(go_away.time_left)))

    async def _reconnect_at_turn_boundary(self, time_left_s: float | None) -> None:
        """Reconnect once the current reply is done, or `time_left_s` minus the margin passed."""
        budget = max(0.0, (time_left_s if time_left_s is not None else 0.0) - self._adapter_go_away_margin_s)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and self.generation_active:
            await asyncio.sleep(0.05)
        if self.closing:
            return
        self.on_connection_lost(reason="goAway")
        self._session_should_close.set()

    async def aclose(self) -> None:
        if self._adapter_go_away_task is not None:
            await utils.aio.cancel_and_wait(self._adapter_go_away_task)
        await super().aclose()


class AdaptedRealtimeModel(google.realtime.RealtimeModel):
    """The plugin's ``RealtimeModel`` whose sessions are made by :meth:`new_session`."""

    def new_session(self) -> AdaptedRealtimeSession:
        """A session of this model (override to make a subclass of AdaptedRealtimeSession)."""
        return AdaptedRealtimeSession(self)

    def session(self, *, turn_detection_disabled: bool = False) -> AdaptedRealtimeSession:
        sess = self.new_session()
        self._sessions.add(sess)  # the plugin updates its sessions' options through this set
        return sess

