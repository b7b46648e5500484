"""The Gemini Live stand-in, driven by google-genai's real client.

Each test runs its own event loop (``asyncio.run``); the stand-in runs on its
own thread, so records are read through ``standin.wait_for`` / ``standin.sessions``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from google import genai
from google.genai import types
from websockets.asyncio.client import connect as ws_connect

from tests.audio import rms_dbfs
from tests.standins.gemini_live import (
    INPUT_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    EnergyVad,
    GeminiLiveStandin,
    SessionRecord,
    StandinConfig,
    SENSITIVITY_DB,
    TONE_DBFS,
    ToolCallSpec,
    speech_pcm,
    tone_pcm,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
CHUNK_BYTES = 1600  # 50 ms of 16 kHz PCM16 mono, what livekit-plugins-google sends
UTTERANCE = "What is the weather like in Paris today?"
TOOL = ToolCallSpec("get_weather", {"city": "Paris"}, response_timeout_s=1.0)
WEATHER_TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Current weather for a city.",
            parameters=types.Schema(
                type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}
            ),
        )
    ]
)


def silence(ms: int) -> bytes:
    """``ms`` of 16 kHz PCM16 silence."""
    return b"\0\0" * (INPUT_SAMPLE_RATE * ms // 1000)


@pytest.fixture(scope="module")
def fast_standin() -> Iterator[GeminiLiveStandin]:
    """A fast stand-in: replies at 8x real time, turnComplete not held back."""
    config = StandinConfig(reply_pacing=8.0, hold_turn_complete=False, tool_call=TOOL)
    with GeminiLiveStandin(config) as server:
        yield server


@pytest.fixture(scope="module")
def utterance_16k() -> bytes:
    return speech_pcm(UTTERANCE, INPUT_SAMPLE_RATE)


class LiveClient:
    """A google-genai live session plus a task that collects every server message."""

    def __init__(self, session: genai.live.AsyncSession) -> None:
        self.session = session
        self.received: list[types.LiveServerMessage] = []
        self.error: Exception | None = None
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        try:
            while True:
                async for message in self.session.receive():
                    self.received.append(message)
                    self._new.set()
        except Exception as e:  # the connection ended: wake wait_for with the reason
            self.error = e
            self._new.set()

    async def wait_for(
        self, predicate: Callable[[types.LiveServerMessage], object], timeout: float = 10.0, start: int = 0
    ) -> int:
        """Index of the first message from ``start`` on that satisfies ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(start, len(self.received)):
                    if predicate(self.received[i]):
                        return i
                if self.error is not None:
                    raise AssertionError(f"connection ended while waiting: {self.error!r}")
                self._new.clear()
                await self._new.wait()

    async def send_audio(self, pcm: bytes) -> None:
        """Send 16 kHz PCM16 in 50 ms chunks, as fast as the socket takes it (VAD runs on audio time)."""
        for i in range(0, len(pcm), CHUNK_BYTES):
            await self.session.send_realtime_input(
                audio=types.Blob(data=pcm[i : i + CHUNK_BYTES], mime_type="audio/pcm;rate=16000")
            )

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def live_client(standin: GeminiLiveStandin, **config: Any) -> AsyncIterator[LiveClient]:
    """Connect the way the agent does: base URL + an SSL context trusting the stand-in's CA.

    On exit the socket is closed with code 1011, as livekit-plugins-google does.
    """
    ssl_ctx = ssl.create_default_context(cafile=str(standin.ca_file))
    client = genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(base_url=standin.base_url, async_client_args={"ssl": ssl_ctx}),
    )
    live_config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        **config,
    )
    async with client.aio.live.connect(model=MODEL, config=live_config) as session:
        lc = LiveClient(session)
        try:
            yield lc
        finally:
            await lc.aclose()
            await session._ws.close(code=1011, reason="client closing")


def reply_of(messages: list[types.LiveServerMessage]) -> tuple[bytes, str]:
    """(24 kHz audio, output transcription) of the given server messages."""
    audio, text = b"", ""
    for m in messages:
        sc = m.server_content
        if sc and sc.model_turn:
            for part in sc.model_turn.parts or []:
                assert part.inline_data is not None
                assert part.inline_data.mime_type == f"audio/pcm;rate={OUTPUT_SAMPLE_RATE}"
                audio += part.inline_data.data or b""
        if sc and sc.output_transcription:
            text += sc.output_transcription.text or ""
    return audio, text


def tool_calls_of(message: types.LiveServerMessage) -> list[types.FunctionCall]:
    assert message.tool_call is not None and message.tool_call.function_calls
    return message.tool_call.function_calls


def is_turn_complete(m: types.LiveServerMessage) -> bool:
    return bool(m.server_content and m.server_content.turn_complete)


def last_session(
    standin: GeminiLiveStandin, predicate: Callable[[SessionRecord], object], timeout: float = 10.0
) -> SessionRecord:
    """The latest session, once ``predicate`` holds for it."""
    return standin.wait_for(lambda ss: bool(ss) and predicate(ss[-1]), timeout)[-1]


def test_audio_turn_gets_a_spoken_reply(fast_standin: GeminiLiveStandin, utterance_16k: bytes) -> None:
    sent = utterance_16k + silence(800)
    # The audio must exercise the URL-safe alphabet, or the byte-for-byte check below proves little.
    assert re.search(r"[-_]", base64.urlsafe_b64encode(sent).decode())

    async def scenario() -> list[types.LiveServerMessage]:
        ric = types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=400)
        )
        async with live_client(
            fast_standin, system_instruction="Be brief.", realtime_input_config=ric
        ) as client:
            assert client.session.setup_complete is not None
            await client.wait_for(lambda m: m.session_resumption_update is not None)
            start = len(client.received)
            await client.send_audio(sent)
            done = await client.wait_for(is_turn_complete, start=start)
            await client.wait_for(lambda m: m.session_resumption_update is not None, start=done)
            return list(client.received)

    received = asyncio.run(scenario())

    # The first message after setupComplete is a resumable handle.
    first = received[0].session_resumption_update
    assert first is not None and first.resumable and first.new_handle

    transcripts = [
        m.server_content.input_transcription
        for m in received
        if m.server_content and m.server_content.input_transcription
    ]
    assert len(transcripts) == 1 and transcripts[0].finished
    match = re.fullmatch(r"\((\d+\.\d) s of speech\)", transcripts[0].text or "")
    assert match, transcripts[0].text
    speech_s = float(match.group(1))
    assert 1.0 <= speech_s <= len(utterance_16k) / (2 * INPUT_SAMPLE_RATE) + 0.1

    audio, text = reply_of(received)
    assert text == f"I heard about {speech_s:.1f} seconds of speech."
    assert audio == speech_pcm(text, OUTPUT_SAMPLE_RATE)  # real espeak-ng speech at 24 kHz
    assert len(audio) / (2 * OUTPUT_SAMPLE_RATE) > 1.0

    kinds = [
        "audio"
        if m.server_content and m.server_content.model_turn
        else "generation_complete"
        if m.server_content and m.server_content.generation_complete
        else "turn_complete"
        if is_turn_complete(m)
        else "usage"
        if m.usage_metadata
        else "resumption"
        if m.session_resumption_update
        else "other"
        for m in received
    ]
    last_audio = max(i for i, k in enumerate(kinds) if k == "audio")
    assert last_audio < kinds.index("generation_complete") < kinds.index("turn_complete")
    assert kinds[kinds.index("turn_complete") + 1 :] == ["usage", "resumption"]
    usage = received[kinds.index("usage")].usage_metadata
    assert usage is not None and usage.total_token_count == (usage.prompt_token_count or 0) + (
        usage.response_token_count or 0
    )
    last = received[-1].session_resumption_update
    assert last is not None and last.new_handle != first.new_handle

    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == []
    assert record.close_code == 1011
    assert record.api_key == "test-key"
    assert record.setup is not None
    assert record.setup.model == f"models/{MODEL}"
    assert record.setup.system_instruction == "Be brief."
    assert record.setup.input_transcription and record.setup.output_transcription
    assert record.setup.realtime_input_config == {
        "automatic_activity_detection": {"silence_duration_ms": 400}
    }
    assert record.vad_silence_ms == 400
    # Every input byte, in order, decoded from URL-safe base64.
    assert bytes(record.input_audio) == sent
    assert [c.size for c in record.audio_chunks] == [
        len(sent[i : i + CHUNK_BYTES]) for i in range(0, len(sent), CHUNK_BYTES)
    ]
    assert all(a.offset + a.size == b.offset for a, b in zip(record.audio_chunks, record.audio_chunks[1:]))
    assert {m.kind for m in record.messages} == {"setup", "realtime_input.audio"}
    (turn,) = record.turns
    assert turn.kind == "audio" and turn.end_reason == "vad" and not turn.interrupted
    assert turn.speech_start_ms is not None and turn.speech_end_ms is not None
    assert turn.speech_start_ms < 200
    assert abs((turn.speech_end_ms - turn.speech_start_ms) / 1000 - speech_s) < 0.06
    assert turn.reply_text == text and turn.reply_audio_bytes == len(audio)
    assert turn.first_audio_at is not None and turn.first_audio_at >= turn.end_declared_at
    assert [e.kind for e in record.vad_events] == ["start", "end"]
    assert record.handles[0] == first.new_handle and len(record.handles) == 2


def test_text_turns_get_replies(fast_standin: GeminiLiveStandin) -> None:
    async def scenario() -> tuple[str, str]:
        async with live_client(fast_standin) as client:
            # As livekit-plugins-google's generate_reply(instructions=...) sends it.
            await client.session.send_client_content(
                turns=[
                    types.Content(
                        role="model", parts=[types.Part(text="Greet the user and offer your help.")]
                    ),
                    types.Content(role="user", parts=[types.Part(text=".")]),
                ],
                turn_complete=True,
            )
            first = await client.wait_for(is_turn_complete)
            # Typed chat: the text with turnComplete false, then a "." turn.
            await client.session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text="What time is it?")]),
                turn_complete=False,
            )
            await client.session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text=".")]), turn_complete=True
            )
            second = await client.wait_for(is_turn_complete, start=first + 1)
            return reply_of(client.received[: first + 1])[1], reply_of(
                client.received[first + 1 : second + 1]
            )[1]

    greeting, answer = asyncio.run(scenario())
    assert greeting == "Hello! How can I help you today?"
    assert answer == "You wrote: What time is it?"
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == []
    assert [(t.kind, t.contents, t.reply_text) for t in record.turns] == [
        ("text", [("model", "Greet the user and offer your help."), ("user", ".")], greeting),
        ("text", [("user", "What time is it?"), ("user", ".")], answer),
    ]
    assert [m.kind for m in record.messages] == [
        "setup",
        "client_content",
        "client_content",
        "client_content",
    ]


def test_declared_tool_is_called_and_its_answer_spoken(
    fast_standin: GeminiLiveStandin, utterance_16k: bytes
) -> None:
    async def scenario() -> tuple[types.FunctionCall, str]:
        async with live_client(fast_standin, tools=[WEATHER_TOOL]) as client:
            await client.send_audio(utterance_16k + silence(800))
            i = await client.wait_for(lambda m: m.tool_call is not None)
            (call,) = tool_calls_of(client.received[i])
            await client.session.send_tool_response(
                function_responses=types.FunctionResponse(
                    id=call.id, name=call.name, response={"output": "Sunny, 21 degrees"}
                )
            )
            done = await client.wait_for(is_turn_complete, start=i)
            return call, reply_of(client.received[i : done + 1])[1]

    call, spoken = asyncio.run(scenario())
    assert call.name == "get_weather" and call.args == {"city": "Paris"} and call.id
    assert spoken == "The tool said: Sunny, 21 degrees"
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == []
    assert record.setup is not None and record.setup.function_names == ("get_weather",)
    (issued,) = record.tool_calls
    assert (issued.id, issued.name, issued.args) == (call.id, "get_weather", {"city": "Paris"})
    assert issued.response == {"output": "Sunny, 21 degrees"} and issued.response_name == "get_weather"
    assert issued.error is None and issued.responded_at is not None
    assert [(r.id, r.matched) for r in record.tool_responses] == [(call.id, True)]
    assert record.turns[0].tool_call_id == call.id


def test_tool_response_with_a_wrong_id_is_an_error(
    fast_standin: GeminiLiveStandin, utterance_16k: bytes
) -> None:
    async def scenario() -> str:
        async with live_client(fast_standin, tools=[WEATHER_TOOL]) as client:
            await client.send_audio(utterance_16k + silence(800))
            i = await client.wait_for(lambda m: m.tool_call is not None)
            await client.session.send_tool_response(
                function_responses=types.FunctionResponse(
                    id="not-the-id", name="get_weather", response={"output": "?"}
                )
            )
            done = await client.wait_for(is_turn_complete, start=i)  # after TOOL.response_timeout_s
            return reply_of(client.received[i : done + 1])[1]

    assert asyncio.run(scenario()) == "The tool did not answer."
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    (issued,) = record.tool_calls
    assert issued.response is None and issued.error and "no tool response" in issued.error
    assert [(r.id, r.matched) for r in record.tool_responses] == [("not-the-id", False)]
    assert any("not-the-id" in e for e in record.errors)


def test_speech_during_a_reply_interrupts_it(utterance_16k: bytes) -> None:
    config = StandinConfig(reply_pacing=1.0, hold_turn_complete=True, vad_silence_ms=300)
    with GeminiLiveStandin(config) as standin:

        async def scenario() -> tuple[int, int, int]:
            async with live_client(standin) as client:
                await client.send_audio(utterance_16k + silence(400))
                first_audio = await client.wait_for(
                    lambda m: bool(m.server_content and m.server_content.model_turn)
                )
                await client.send_audio(speech_pcm("Stop", INPUT_SAMPLE_RATE) + silence(400))
                interrupted = await client.wait_for(
                    lambda m: bool(m.server_content and m.server_content.interrupted), start=first_audio
                )
                next_turn = await client.wait_for(is_turn_complete, start=interrupted + 2)
                return first_audio, interrupted, next_turn

        first_audio, interrupted, next_turn = asyncio.run(scenario())
        record = last_session(standin, lambda s: s.closed_at is not None)

    assert first_audio < interrupted < next_turn
    assert record.errors == []
    first, second = record.turns
    assert first.interrupted and first.interrupted_at is not None
    assert first.turn_complete_at is not None and first.turn_complete_at >= first.interrupted_at
    assert first.reply_text is not None and first.reply_audio_bytes < len(speech_pcm(first.reply_text))
    assert not second.interrupted and second.reply_text is not None
    assert [e.kind for e in record.vad_events] == ["start", "end", "start", "end"]


def test_speech_while_a_tool_call_is_pending_cancels_it(
    fast_standin: GeminiLiveStandin, utterance_16k: bytes
) -> None:
    async def scenario() -> tuple[str, list[str]]:
        async with live_client(fast_standin, tools=[WEATHER_TOOL]) as client:
            await client.send_audio(utterance_16k + silence(800))
            i = await client.wait_for(lambda m: m.tool_call is not None)
            call_id = tool_calls_of(client.received[i])[0].id
            await client.send_audio(speech_pcm("No wait", INPUT_SAMPLE_RATE))  # no tool response sent
            j = await client.wait_for(lambda m: m.tool_call_cancellation is not None, start=i)
            await client.wait_for(lambda m: bool(m.server_content and m.server_content.interrupted), start=j)
            cancellation = client.received[j].tool_call_cancellation
            assert cancellation is not None
            return call_id or "", cancellation.ids or []

    call_id, cancelled_ids = asyncio.run(scenario())
    assert cancelled_ids == [call_id]
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.tool_calls[0].cancelled and record.tool_calls[0].response is None
    assert record.turns[0].interrupted


def test_fault_hooks_and_restart_keep_port_and_ca() -> None:
    with GeminiLiveStandin(StandinConfig()) as standin:

        async def session_ended_by(fault: Callable[[], None]) -> list[types.LiveServerMessage]:
            client = genai.Client(api_key="k", http_options=standin.http_options())
            received: list[types.LiveServerMessage] = []
            async with client.aio.live.connect(model=MODEL) as session:
                await asyncio.to_thread(fault)
                with pytest.raises(genai.errors.APIError):
                    while True:
                        async for message in session.receive():
                            received.append(message)
            return received

        asyncio.run(session_ended_by(lambda: standin.disconnect(code=1011, reason="injected")))
        dropped = last_session(standin, lambda s: s.closed_at is not None)
        assert (dropped.close_code, dropped.close_reason) == (1011, "injected")

        received = asyncio.run(session_ended_by(lambda: standin.go_away(time_left_s=0.2)))
        assert [m.go_away.time_left for m in received if m.go_away] == ["0.2s"]
        assert (
            last_session(standin, lambda s: s.closed_at is not None and s.session_id == "s2").close_code
            == 1000
        )

        port = standin.port
        standin.stop()
        standin.start()
        assert standin.port == port
        asyncio.run(session_ended_by(lambda: standin.disconnect(abrupt=True)))
        assert [s.session_id for s in standin.sessions] == ["s1", "s2", "s3"]
        assert standin.errors() == []


def test_manual_activity_signals_delimit_turns(fast_standin: GeminiLiveStandin, utterance_16k: bytes) -> None:
    ric = types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
    )

    async def scenario() -> None:
        async with live_client(fast_standin, realtime_input_config=ric) as client:
            await client.session.send_realtime_input(activity_start=types.ActivityStart())
            await client.send_audio(utterance_16k)
            await client.session.send_realtime_input(activity_end=types.ActivityEnd())
            await client.wait_for(is_turn_complete)

    asyncio.run(scenario())
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == [] and not record.automatic_activity_detection
    (turn,) = record.turns
    assert turn.end_reason == "activity_end" and turn.speech_start_ms == 0
    assert turn.speech_end_ms == pytest.approx(len(utterance_16k) / 32)
    kinds = [m.kind for m in record.messages]
    assert kinds[1] == "realtime_input.activity_start" and kinds[-1] == "realtime_input.activity_end"


def test_wrong_sample_rate_is_recorded_as_an_error(fast_standin: GeminiLiveStandin) -> None:
    async def scenario() -> None:
        async with live_client(fast_standin) as client:
            await client.session.send_realtime_input(
                audio=types.Blob(data=b"\0" * 960, mime_type="audio/pcm;rate=24000")
            )
            await client.send_audio(silence(100))

    asyncio.run(scenario())
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert len(record.input_audio) == len(silence(100))
    assert len(record.errors) == 1 and "audio/pcm;rate=24000" in record.errors[0]


def test_session_resumption_is_recorded(fast_standin: GeminiLiveStandin) -> None:
    async def handle_of(handle: str | None) -> str:
        async with live_client(
            fast_standin, session_resumption=types.SessionResumptionConfig(handle=handle)
        ) as client:
            i = await client.wait_for(lambda m: m.session_resumption_update is not None)
            update = client.received[i].session_resumption_update
            assert update is not None and update.new_handle
            return update.new_handle

    first_handle = asyncio.run(handle_of(None))
    first = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert first.setup is not None and first.setup.resumption_handle is None and first.resumption is None

    second_handle = asyncio.run(handle_of(first_handle))
    second = last_session(
        fast_standin, lambda s: s.closed_at is not None and s.session_id != first.session_id
    )
    assert second_handle != first_handle
    assert second.resumption is not None
    assert (second.resumption.handle, second.resumption.known, second.resumption.resumed_session_id) == (
        first_handle,
        True,
        first.session_id,
    )

    asyncio.run(handle_of("made-up-handle"))
    third = last_session(
        fast_standin, lambda s: s.closed_at is not None and s.session_id != second.session_id
    )
    assert (
        third.resumption is not None
        and not third.resumption.known
        and third.resumption.resumed_session_id is None
    )


def test_handshake_needs_the_path_and_an_api_key(fast_standin: GeminiLiveStandin) -> None:
    ssl_ctx = fast_standin.ssl_context()
    ws_base = fast_standin.base_url.replace("https://", "wss://")
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"

    async def status_of(url: str, headers: dict[str, str]) -> int | None:
        try:
            async with ws_connect(url, ssl=ssl_ctx, additional_headers=headers):
                return None
        except websockets.exceptions.InvalidStatus as e:
            return e.response.status_code

    before = len(fast_standin.rejected_handshakes)
    assert asyncio.run(status_of(ws_base + path, {})) == 401
    assert asyncio.run(status_of(ws_base + "/ws/elsewhere", {"x-goog-api-key": "k"})) == 404
    assert asyncio.run(status_of(ws_base + path, {"x-goog-api-key": "k"})) is None
    assert [r.status for r in fast_standin.rejected_handshakes[before:]] == [401, 404]

    # The real client with no trust in the stand-in's CA cannot connect at all.
    async def untrusted() -> None:
        client = genai.Client(
            api_key="k",
            http_options=types.HttpOptions(
                base_url=fast_standin.base_url, async_client_args={"ssl": ssl.create_default_context()}
            ),
        )
        async with client.aio.live.connect(model=MODEL):
            pass

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(untrusted())


def test_energy_vad_finds_speech_in_audio_time() -> None:
    rate = INPUT_SAMPLE_RATE
    t = np.arange(rate) / rate  # 1 s
    tone = (0.1 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()  # about -23 dBFS
    audio = silence(300) + tone + silence(600)
    vad = EnergyVad(threshold_dbfs=-40, min_speech_ms=60, silence_ms=500)
    events = []
    for offset in range(0, len(audio), CHUNK_BYTES):
        # "Arrival time" = the chunk's byte offset, to check which chunk each event is tied to.
        events += vad.feed(audio[offset : offset + CHUNK_BYTES], at=float(offset))
    assert [(e.kind, e.audio_ms) for e in events] == [("start", 300), ("end", 1300)]
    start, end = events
    # Speech starts at 300 ms (byte 9600) and is declared 60 ms later (byte 11520, chunk at 11200).
    assert (start.at, start.declared_at) == (9600, 11200)
    # It ends at 1300 ms (byte 41600, chunk at 40000) and is declared 500 ms later (chunk at 56000).
    assert (end.at, end.declared_at) == (40000, 56000)


def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.gemini_live", "--port", "0", "--cert-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip().removeprefix("base_url=")
        ca_file = proc.stdout.readline().strip().removeprefix("ca_file=")
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", base_url)
        assert Path(ca_file) == tmp_path / "gemini-standin-ca.pem"

        async def connect() -> None:
            client = genai.Client(
                api_key="k",
                http_options=types.HttpOptions(
                    base_url=base_url, async_client_args={"ssl": ssl.create_default_context(cafile=ca_file)}
                ),
            )
            async with client.aio.live.connect(model=MODEL) as session:
                assert session.setup_complete is not None

        asyncio.run(connect())
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in stderr


@pytest.mark.filterwarnings(
    "ignore:Setting `LiveConnectConfig.generation_config` is deprecated:DeprecationWarning"
)
def test_livekit_plugin_greets_and_hears_speech(
    fast_standin: GeminiLiveStandin, utterance_16k: bytes
) -> None:
    """The agent's own code path: livekit-plugins-google's RealtimeModel against the stand-in."""
    google_plugin = pytest.importorskip("livekit.plugins.google")
    from livekit import rtc

    async def scenario() -> tuple[str, int, list[str]]:
        model = google_plugin.realtime.RealtimeModel(
            api_key="test-key", http_options=fast_standin.http_options()
        )
        session = model.session()
        transcripts: list[str] = []

        def on_transcript(event: Any) -> None:
            if event.is_final:
                transcripts.append(event.transcript)

        session.on("input_audio_transcription_completed", on_transcript)
        try:
            generation = await asyncio.wait_for(session.generate_reply(instructions="Greet the user."), 10)
            text, samples = "", 0
            async for message in generation.message_stream:
                async for chunk in message.text_stream:
                    text += chunk
                async for frame in message.audio_stream:
                    assert frame.sample_rate == OUTPUT_SAMPLE_RATE
                    samples += frame.samples_per_channel
            pcm = utterance_16k + silence(800)
            pcm += b"\0" * (-len(pcm) % 320)
            for i in range(0, len(pcm), 320):  # 10 ms frames, as from a room track
                session.push_audio(rtc.AudioFrame(pcm[i : i + 320], INPUT_SAMPLE_RATE, 1, 160))
            async with asyncio.timeout(10):
                while not transcripts:
                    await asyncio.sleep(0.05)
            return text, samples, transcripts
        finally:
            await session.aclose()

    text, samples, transcripts = asyncio.run(scenario())
    assert text == "Hello! How can I help you today?"
    assert samples * 2 == len(speech_pcm(text))
    assert len(transcripts) == 1 and re.fullmatch(r"\(\d\.\d s of speech\)", transcripts[0])
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == [] and record.close_code == 1011
    assert record.turns[0].kind == "text" and "Greet the user." in record.turns[0].text
    assert record.turns[1].kind == "audio"


def test_refused_handshakes_carry_the_status_and_retry_after(fast_standin: GeminiLiveStandin) -> None:
    ssl_ctx = fast_standin.ssl_context()
    url = fast_standin.base_url.replace("https://", "wss://") + (
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )

    async def attempt() -> tuple[int | None, str | None]:
        try:
            async with ws_connect(url, ssl=ssl_ctx, additional_headers={"x-goog-api-key": "k"}):
                return None, None
        except websockets.exceptions.InvalidStatus as e:
            return e.response.status_code, e.response.headers.get("Retry-After")

    before = len(fast_standin.rejected_handshakes)
    fast_standin.refuse_handshakes(429, count=2, retry_after_s=3)
    try:
        assert asyncio.run(attempt()) == (429, "3")
        assert asyncio.run(attempt()) == (429, "3")
        assert asyncio.run(attempt()) == (None, None)
        fast_standin.refuse_handshakes(403)
        assert asyncio.run(attempt()) == (403, None)
        assert asyncio.run(attempt()) == (403, None)
    finally:
        fast_standin.accept_handshakes()
    assert asyncio.run(attempt()) == (None, None)
    assert [r.status for r in fast_standin.rejected_handshakes[before:]] == [429, 429, 403, 403]


def test_stalled_setup_is_never_answered(fast_standin: GeminiLiveStandin) -> None:
    fast_standin.stall_setups(count=1)

    async def connect(timeout: float) -> None:
        client = genai.Client(api_key="k", http_options=fast_standin.http_options())
        async with asyncio.timeout(timeout):
            async with client.aio.live.connect(model=MODEL):
                pass

    with pytest.raises(TimeoutError):
        asyncio.run(connect(1.0))
    stalled = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert stalled.stalled and stalled.messages_of("setup") and not stalled.handles
    asyncio.run(connect(10.0))  # the next one is served
    assert not last_session(fast_standin, lambda s: s.session_id != stalled.session_id).stalled


def test_resumption_tells_how_many_turns_the_handle_covers(fast_standin: GeminiLiveStandin) -> None:
    async def one_turn_then_handle() -> str:
        async with live_client(fast_standin) as client:
            await client.session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text="hello")]), turn_complete=True
            )
            done = await client.wait_for(is_turn_complete)
            i = await client.wait_for(lambda m: m.session_resumption_update is not None, start=done)
            return client.received[i].session_resumption_update.new_handle

    handle = asyncio.run(one_turn_then_handle())
    first = last_session(fast_standin, lambda s: s.closed_at is not None)

    async def resume() -> None:
        async with live_client(
            fast_standin, session_resumption=types.SessionResumptionConfig(handle=handle)
        ) as client:
            await client.wait_for(lambda m: m.session_resumption_update is not None)

    asyncio.run(resume())
    resumed = last_session(fast_standin, lambda s: s.closed_at is not None and s.session_id != first.session_id)
    assert resumed.resumption is not None
    assert (resumed.resumption.resumed_session_id, resumed.resumption.resumed_turns) == (first.session_id, 1)


def _scaled(pcm: bytes, dbfs: float) -> bytes:
    """`pcm` (PCM16) scaled so its loud frames sit near `dbfs`: the utterance's peak 20 ms level."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    loudest = max(rms_dbfs(f.astype("<i2").tobytes()) for f in frames)
    scaled = samples * 10 ** ((dbfs - loudest) / 20)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def test_activity_detection_settings_move_the_vad(utterance_16k: bytes) -> None:
    """prefixPaddingMs and the start/end sensitivities reach the VAD (recorded, and heard)."""
    base = StandinConfig().vad_threshold_dbfs
    # Loud enough for a sensitive start only: the utterance's loudest frames sit 3 dB below
    # the plain threshold, so start HIGH (base - 6 dB) hears it and start LOW does not.
    quiet = _scaled(utterance_16k, base - SENSITIVITY_DB / 2) + silence(800)

    async def one(start: types.StartSensitivity, prefix_ms: int) -> SessionRecord:
        with GeminiLiveStandin(StandinConfig(reply_pacing=8.0, hold_turn_complete=False)) as standin:
            ric = types.RealtimeInputConfig(
                automatic_activity_detection=types.AutomaticActivityDetection(
                    silence_duration_ms=300,
                    prefix_padding_ms=prefix_ms,
                    start_of_speech_sensitivity=start,
                    end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_LOW,
                )
            )
            async with live_client(standin, realtime_input_config=ric) as client:
                await client.send_audio(quiet)
                await asyncio.sleep(0.5)
            return last_session(standin, lambda s: s.closed_at is not None)

    high = asyncio.run(one(types.StartSensitivity.START_SENSITIVITY_HIGH, 40))
    low = asyncio.run(one(types.StartSensitivity.START_SENSITIVITY_LOW, 120))
    assert (high.vad_prefix_ms, high.vad_start_dbfs, high.vad_end_dbfs) == (
        40, base - SENSITIVITY_DB, base - SENSITIVITY_DB
    )
    assert (low.vad_prefix_ms, low.vad_start_dbfs) == (120, base + SENSITIVITY_DB)
    assert len(high.turns) == 1 and high.turns[0].kind == "audio"
    assert low.turns == [] and low.vad_events == []


def test_answer_at_speech_start_replies_while_the_caller_still_speaks(utterance_16k: bytes) -> None:
    config = StandinConfig(reply_pacing=1.0, answer_at_speech_start=True, reply_audio="tone")
    with GeminiLiveStandin(config) as standin:

        async def scenario() -> None:
            async with live_client(standin) as client:
                # Real time, so "before the utterance ends" means something.
                for i in range(0, len(utterance_16k), CHUNK_BYTES):
                    await client.send_audio(utterance_16k[i : i + CHUNK_BYTES])
                    await asyncio.sleep(0.05)
                await client.send_audio(silence(800))
                await client.wait_for(is_turn_complete, timeout=15)

        asyncio.run(scenario())
        record = last_session(standin, lambda s: s.closed_at is not None)

    (turn,) = record.turns  # the rest of the utterance neither ends another turn nor barges in
    assert turn.end_reason == "speech_start" and not turn.interrupted
    assert turn.first_audio_at is not None and turn.speech_start_at is not None
    speech_end = next(e for e in record.vad_events if e.kind == "end")
    assert turn.first_audio_at < speech_end.at
    assert [e.kind for e in record.vad_events] == ["start", "end"]
    assert record.errors == []


def test_tone_replies_are_steady() -> None:
    pcm = tone_pcm(3)
    assert len(pcm) == int(3 * 0.3 * OUTPUT_SAMPLE_RATE) * 2
    frames = [pcm[i : i + 480] for i in range(480, len(pcm) - 480, 480)]  # 10 ms at 24 kHz
    assert all(abs(rms_dbfs(f) - TONE_DBFS) < 0.5 for f in frames)


def jpeg_of(rgb: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    """A solid-colour JPEG, as livekit-plugins-google encodes a video frame."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="JPEG", quality=75)
    return out.getvalue()


def test_video_frames_are_recorded_counted_and_described(
    fast_standin: GeminiLiveStandin, utterance_16k: bytes
) -> None:
    """``realtime_input.video`` as google-genai sends it: each JPEG is decoded and kept, costs
    image tokens, and the next spoken turn's reply says what the last frame showed."""

    async def scenario() -> list[types.LiveServerMessage]:
        async with live_client(fast_standin) as client:
            for rgb in [(10, 10, 10), (200, 20, 30)]:  # black, then red: the last one counts
                await client.session.send_realtime_input(
                    video=types.Blob(data=jpeg_of(rgb, (640, 480)), mime_type="image/jpeg")
                )
            start = len(client.received)
            await client.send_audio(utterance_16k + silence(800))
            done = await client.wait_for(is_turn_complete, start=start)
            await client.wait_for(lambda m: m.usage_metadata is not None, start=done)
            return list(client.received)

    received = asyncio.run(scenario())
    _, text = reply_of(received)
    assert text.endswith(" I see a red picture, 640 by 480."), text
    (usage,) = [m.usage_metadata for m in received if m.usage_metadata]
    assert usage.prompt_tokens_details == [
        types.ModalityTokenCount(modality=types.MediaModality.IMAGE, token_count=2 * 258)
    ]
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert record.errors == []
    assert [(f.mime_type, f.format, f.width, f.height) for f in record.video_frames] == [
        ("image/jpeg", "JPEG", 640, 480)
    ] * 2
    assert [f.colour_name for f in record.video_frames] == ["black", "red"]
    assert len(record.messages_of("realtime_input.video")) == 2


def test_a_video_frame_that_is_not_its_image_type_is_an_error(fast_standin: GeminiLiveStandin) -> None:
    async def scenario() -> None:
        async with live_client(fast_standin) as client:
            await client.session.send_realtime_input(video=types.Blob(data=b"not a jpeg", mime_type="image/jpeg"))
            await client.session.send_realtime_input(
                video=types.Blob(data=jpeg_of((0, 0, 255), (32, 32)), mime_type="image/png")
            )
            await client.send_audio(silence(100))

    asyncio.run(scenario())
    record = last_session(fast_standin, lambda s: s.closed_at is not None)
    assert len(record.errors) == 2, record.errors
    assert "not a readable image" in record.errors[0] and "'image/png'" in record.errors[1]
    assert [f.colour_name for f in record.video_frames] == ["blue"]
