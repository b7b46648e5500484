"""Pins each private member of livekit-plugins-google / google-genai that plugin_adapter.py relies on.

An upgrade that renames, removes or changes one of them fails here, not in a call. The
end-to-end behaviour built on them (replay, GoAway, retried handshakes) is in test_resilience.py.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from google.genai import types
from livekit import rtc
from livekit.agents import utils
from livekit.plugins.google.realtime import realtime_api

from voice_agent import plugin_adapter
from voice_agent.plugin_adapter import AdaptedRealtimeModel, AdaptedRealtimeSession

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


class Probe(AdaptedRealtimeSession):
    """An adapted session that never connects and writes down what its hooks were told."""

    def __init__(self, model: AdaptedRealtimeModel, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.connects: list[Any] = []
        self.lost: list[str] = []
        self.started = 0
        self.commit = True
        self.accept = True

    @asynccontextmanager
    async def connect_live(self, live: Any, *, model: str, config: types.LiveConnectConfig) -> AsyncIterator[Any]:
        self.connects.append(live)
        await asyncio.Event().wait()
        yield None

    def on_generation_started(self) -> None:
        self.started += 1

    def commit_input_transcription(self, transcript: str) -> bool:
        return self.commit

    def accept_input_transcription(self) -> bool:
        return self.accept

    def on_connection_lost(self, *, reason: str) -> None:
        self.lost.append(reason)


class ProbeModel(AdaptedRealtimeModel):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key="test-key")
        self.session_kwargs = kwargs

    def new_session(self) -> Probe:
        return Probe(self, **self.session_kwargs)


@asynccontextmanager
async def probe(**kwargs: Any) -> AsyncIterator[Probe]:
    model = ProbeModel(**kwargs)
    session = model.session()
    try:
        yield session
    finally:
        await session.aclose()


def transcription(text: str) -> types.LiveServerContent:
    return types.LiveServerContent(input_transcription=types.Transcription(text=text))


# ---- versions ----------------------------------------------------------------------------


def test_the_tested_versions_are_the_locked_ones() -> None:
    """Re-locking another version fails here until the adapter is tested with it."""
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", LOCK.read_text(), re.M))
    for name, tested in plugin_adapter.TESTED_VERSIONS.items():
        assert pins[name] in tested, (name, pins[name], tested)


def test_the_installed_versions_are_tested() -> None:
    plugin_adapter.check_versions()


# ---- the plugin's session ----------------------------------------------------------------


async def test_every_handshake_goes_through_connect_live() -> None:
    """`_client.aio.live.connect` is how the plugin's main task connects."""
    async with probe() as session:
        for _ in range(100):
            if session.connects:
                break
            await asyncio.sleep(0.05)
        assert len(session.connects) == 1
        assert hasattr(session.connects[0], "connect")  # google-genai's `live`, unwrapped


async def test_audio_goes_out_in_chunks_of_input_chunk_ms() -> None:
    """`_resample_audio`, `_bstream` and `_send_client_event` (onto `_msg_ch`)."""
    chunks: list[bytes] = []
    async with probe(input_chunk_ms=20, input_taps=[chunks.append]) as session:
        rate = 48000
        pcm = b"\x01\x00" * (rate // 10)  # 100 ms at 48 kHz: the plugin resamples to 16 kHz
        session.push_audio(rtc.AudioFrame(pcm, rate, 1, rate // 10))
        queued = []
        while not session._msg_ch.empty():
            queued.append(session._msg_ch.recv_nowait())
    assert 3 <= len(chunks) <= 5 and {len(c) for c in chunks} == {640}  # resampler delay: a chunk or two held
    assert len(queued) == len(chunks)
    assert all(isinstance(m, types.LiveClientRealtimeInput) and m.audio.data == c for m, c in zip(queued, chunks))


async def test_a_generation_commits_its_input_transcription_unless_told_not_to() -> None:
    """`_start_new_generation`, `_handle_server_content`, `_current_generation` (`_done`,
    `input_transcription`), `_mark_current_generation_done`, `_chat_ctx`."""
    async with probe() as session:
        completed: list[str] = []
        session.on("input_audio_transcription_completed",
                   lambda ev: completed.append(ev.transcript) if ev.is_final else None)

        session._start_new_generation()
        assert session.started == 1 and session.generation_active
        session._handle_server_content(transcription("hello there"))
        assert session._current_generation.input_transcription == "hello there"
        session._mark_current_generation_done()
        assert not session.generation_active and completed == ["hello there"]
        assert [item.text_content for item in session._chat_ctx.items] == ["hello there"]

        session.commit = False
        session._start_new_generation()
        session._handle_server_content(transcription("said twice"))
        session._mark_current_generation_done()
        assert completed == ["hello there"] and len(session._chat_ctx.items) == 1

        session.commit, session.accept = True, False
        session._start_new_generation()
        session._handle_server_content(transcription("ignored"))
        assert session._current_generation.input_transcription == ""
        session._mark_current_generation_done()
        assert completed == ["hello there"]


async def test_the_plugin_drops_queued_messages_on_a_restart_and_the_adapter_keeps_them() -> None:
    """`_mark_restart_needed(on_error=)` swaps `_msg_ch` for a new, empty channel and sets
    `_session_should_close`; the adapter moves what was queued across."""
    async with probe() as session:
        first, second = (types.LiveClientRealtimeInput(audio=types.Blob(data=bytes([i]), mime_type="audio/pcm"))
                         for i in (1, 2))
        session._send_client_event(first)
        session._send_client_event(second)
        old = session._msg_ch
        session._mark_restart_needed(on_error=True)
        assert session._msg_ch is not old and session._session_should_close.is_set() and session.closing
        assert [session._msg_ch.recv_nowait(), session._msg_ch.recv_nowait()] == [first, second]
        assert session.lost == ["connection dropped"]

        plain_old = session._msg_ch
        plain_old.send_nowait(first)
        session._session_should_close.clear()
        realtime_api.RealtimeSession._mark_restart_needed(session, on_error=True)  # the plugin's own
        assert session._msg_ch is not plain_old and session._msg_ch.empty()
        assert isinstance(session._msg_ch, utils.aio.Chan)


async def test_go_away_reconnects_at_the_turn_boundary() -> None:
    """`_handle_go_away` is called with the server's `LiveServerGoAway`; the reconnect is
    `_session_should_close.set()`."""
    source = inspect.getsource(realtime_api.RealtimeSession)
    assert "self._handle_go_away(response.go_away)" in source
    async with probe(go_away_margin_s=0.0) as session:
        session._start_new_generation()
        session._handle_go_away(types.LiveServerGoAway(time_left="2s"))
        await asyncio.sleep(0.3)
        assert session.lost == [] and not session._session_should_close.is_set()  # the model is speaking
        session._mark_current_generation_done()
        for _ in range(40):
            if session.lost:
                break
            await asyncio.sleep(0.05)
        assert session.lost == ["goAway"] and session._session_should_close.is_set()


async def test_the_resend_after_a_handle_is_skipped_through_resumption_chat_ctx() -> None:
    """`_session_resumption_handle`, `_pending_chat_ctx`, `_chat_ctx`; the plugin re-sends what
    is in its chat context but not in `_resumption_chat_ctx` when it reconnects."""
    source = inspect.getsource(realtime_api.RealtimeSession)
    assert "self._sync_chat_ctx(target, known=self._resumption_chat_ctx)" in source
    async with probe() as session:
        assert session._session_resumption_handle is None and session._pending_chat_ctx is None
        session._chat_ctx.add_message(role="user", content="hi")
        session.resend_nothing_after_handle()
        assert session._resumption_chat_ctx is None  # no handle: the plugin rebuilds from the chat context
        session._session_resumption_handle = "handle-1"
        assert session.session_resumption_handle == "handle-1"
        session.resend_nothing_after_handle()
        assert [i.id for i in session._resumption_chat_ctx.items] == [i.id for i in session._chat_ctx.items]


async def test_the_model_tracks_its_sessions() -> None:
    """`RealtimeModel._sessions`: the plugin updates its sessions' options through it."""
    model = ProbeModel()
    session = model.session()
    try:
        assert session in model._sessions
    finally:
        await session.aclose()


#: What the adapter and resilience.py add to the plugin's session.
OUR_SESSION_ATTRIBUTES = {
    "_adapter_go_away_margin_s", "_adapter_go_away_task", "_adapter_input_taps", "_connections",
    "_cut_turn_committed_at", "_drop_replayed_turn", "_generation_started_at", "_in_flight", "_listeners",
    "_policy", "_replay", "_timing_tasks",
}


async def test_nothing_added_shadows_a_plugin_attribute() -> None:
    """The attributes our subclasses add are not names the plugin's session uses."""
    from voice_agent.resilience import ResilientRealtimeModel

    plain = realtime_api.RealtimeModel(api_key="test-key").session()
    resilient = ResilientRealtimeModel(api_key="test-key").session()
    try:
        # A name the plugin starts using too would drop out of this difference and fail here.
        assert set(vars(resilient)) - set(vars(plain)) == OUR_SESSION_ATTRIBUTES
        assert not OUR_SESSION_ATTRIBUTES & set(dir(realtime_api.RealtimeSession))
        assert {"_client", "_bstream"} <= set(vars(plain))  # replaced on purpose by the adapter
    finally:
        await plain.aclose()
        await resilient.aclose()


# ---- google-genai ------------------------------------------------------------------------


@pytest.mark.parametrize("vertexai", [False, True])
async def test_audio_frames_are_the_very_frames_google_genai_sends(vertexai: bool) -> None:
    """`AsyncSession._ws` is the WebSocket; `send_audio` writes on it byte for byte what
    google-genai's `send_realtime_input` would."""
    from google import genai
    from google.genai import live

    class Socket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, text: str) -> None:
            self.sent.append(text)

    if vertexai:
        client = genai.Client(vertexai=True, project="p", location="us-central1", credentials=_NoCredentials())
    else:
        client = genai.Client(api_key="k")
    socket = Socket()
    session = live.AsyncSession(api_client=client._api_client, websocket=socket)  # type: ignore[arg-type]
    assert plugin_adapter.websocket(session) is socket
    blob = types.Blob(data=bytes(range(256)) * 7, mime_type="audio/pcm;rate=16000")  # both base64 alphabets
    await session.send_realtime_input(audio=blob)
    await plugin_adapter.send_audio(session, blob)
    assert socket.sent == [plugin_adapter.audio_frame(blob)] * 2


class _NoCredentials:
    """Credentials that are never used (no request is made)."""

    token = "unused"
    valid = True
    expired = False

    def refresh(self, _request: object) -> None:
        pass

    def before_request(self, *_args: object) -> None:
        pass
