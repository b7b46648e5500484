"""A local stand-in for Google's Gemini Live API (``BidiGenerateContent`` over WebSocket).

Gemini cannot be reached from the test machines, so tests and benchmarks point
google-genai (directly, or through livekit-plugins-google) at this server
instead. It is a test double of an external API and tries to be honest about it:

* the wire format is the real one: every frame the server sends is built from
  ``google.genai.types.LiveServerMessage`` and serialised the way the SDK expects
  (camelCase keys, ``model_dump(mode="json", by_alias=True, exclude_none=True)``);
  every client frame is parsed with ``google.genai.types.LiveClientMessage``;
* the transport is the real one: ``wss://`` (google-genai always rewrites the base
  URL to ``wss``), the path
  ``/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent``,
  an ``x-goog-api-key`` header;
* nothing is pretended: there is no speech recogniser and no language model. User
  audio is "transcribed" as an honest description such as ``"(1.4 s of speech)"``,
  and replies come from a small pluggable :data:`Responder`, spoken by espeak-ng.

Protocol facts are taken from google-genai 3.4.0 (``google/genai/live.py``,
``types.py``, ``_live_converters.py``), livekit-plugins-google 1.8.9
(``realtime/realtime_api.py``), as pinned in ``requirements.lock``.

Audio formats (from the notes and ``realtime_api.py``):

* client -> server: PCM16 little-endian mono at 16 000 Hz,
  ``mime_type="audio/pcm;rate=16000"``; the plugin sends 50 ms chunks (1600 bytes);
* server -> client: PCM16 little-endian mono at 24 000 Hz,
  ``mimeType="audio/pcm;rate=24000"``.

What a session does (one WebSocket connection):

1. ``setup`` (must come first) -> ``setupComplete``, then ``sessionResumptionUpdate``.
2. ``realtime_input.audio`` is kept byte for byte and run through an energy VAD
   (:class:`EnergyVad`). Speech while a reply is still playing (until its
   ``turnComplete``) stops the reply: ``interrupted: true``, then ``turnComplete``.
   ``vad_silence_ms`` of silence ends the user turn: ``inputTranscription``
   ``{text: "(1.4 s of speech)", finished: true}``, then the reply.
   ``activityStart``/``activityEnd`` delimit turns when the setup disables automatic
   activity detection; ``activityEnd``/``audioStreamEnd`` also end a VAD turn early.
3. ``client_content`` with ``turnComplete: true`` is a text turn, answered the same way.
   ``realtime_input.video`` (or an ``image/*`` ``media_chunks`` blob) is a still frame of
   the caller's camera or screen, JPEG as livekit-plugins-google sends it
   (``types.Blob(data=jpeg, mime_type="image/jpeg")``): decoded and kept as a
   :class:`VideoFrameRecord` (size, mean colour), counted in ``usageMetadata`` as
   :data:`IMAGE_TOKENS_PER_FRAME` image tokens, and described in the next reply
   (:func:`default_responder`), so a test can tell what the caller showed reached the model.
4. A reply: optionally a ``toolCall`` first (:class:`ToolCallSpec`, audio turns only),
   then ``modelTurn`` audio chunks (24 kHz, paced) with ``outputTranscription`` words
   interleaved, ``generationComplete``, ``turnComplete`` (held until the audio would
   have finished playing), ``usageMetadata`` and a fresh ``sessionResumptionUpdate``.

Faults, for resilience tests: :meth:`GeminiLiveStandin.disconnect` (close with a code, or
drop TCP), :meth:`~GeminiLiveStandin.go_away` (``goAway{timeLeft}`` then close),
:meth:`~GeminiLiveStandin.refuse_handshakes` (HTTP 401/403/429/5xx at the upgrade),
:meth:`~GeminiLiveStandin.stall_setups` (``setupComplete`` never comes),
:meth:`~GeminiLiveStandin.send_handle` (a resumption handle at a chosen moment) and
:meth:`~GeminiLiveStandin.stop` (connection refused); `slow_link.SlowLink` puts a slow
network in front of it. Handles it issues are checked when
a setup presents one (:class:`ResumptionRecord`: known? which session, how many turns?).

Use it in-process::

    standin = GeminiLiveStandin(StandinConfig(vad_silence_ms=500))
    standin.start()                     # background thread, ephemeral port
    client = genai.Client(api_key="test", http_options=standin.http_options())
    ...
    sessions = standin.wait_for(lambda ss: ss and ss[-1].turns, timeout=10)
    standin.stop()

or as a process: ``python -m tests.standins.gemini_live --port 9443 --cert-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import dataclasses
import functools
import http
import io
import itertools
import json
import logging
import math
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydantic
import trustme
from google.genai import types
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("gemini_live_standin")
_ws_log = logging.getLogger("gemini_live_standin.websockets")
_ws_log.setLevel(logging.WARNING)  # websockets logs every connection at INFO

INPUT_SAMPLE_RATE = 16_000
"""Hz. The only input rate Gemini Live takes natively (``audio/pcm;rate=16000``)."""
OUTPUT_SAMPLE_RATE = 24_000
"""Hz. Gemini Live's output rate (``audio/pcm;rate=24000``)."""
SAMPLE_WIDTH = 2
"""Bytes per sample: PCM16, mono."""
OUTPUT_MIME_TYPE = f"audio/pcm;rate={OUTPUT_SAMPLE_RATE}"

AUDIO_TOKENS_PER_SECOND = 32
"""Gemini's documented token rate for audio; used only for plausible usageMetadata."""
IMAGE_TOKENS_PER_FRAME = 258
"""Gemini's documented token cost of one video frame (Live API video: 258 tokens per frame)."""
SEEN_WITHIN_S = 5.0
"""A reply describes the last video frame if it came at most this many seconds before."""
#: Named colours a reply may call a frame's mean colour (nearest in RGB).
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128),
    "red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220),
    "yellow": (230, 220, 30), "cyan": (30, 210, 220), "magenta": (210, 30, 210),
    "orange": (240, 140, 20),
}

CA_FILE_NAME = "gemini-standin-ca.pem"
CA_KEY_FILE_NAME = "gemini-standin-ca.key"

# google-genai builds f"{base_url}/ws/google.ai.generativelanguage.{version}"
# ".GenerativeService.BidiGenerateContent" (live.py, AsyncLive.connect).
_PATH_RE = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(?P<version>v[0-9a-z]+)"
    r"\.GenerativeService\.BidiGenerateContent$"
)
_RATE_RE = re.compile(r"rate=(\d+)")
_PLACEHOLDER_RE = re.compile(r"^\W*$")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallSpec:
    """A function call the stand-in makes on every audio user turn.

    The call is only made in sessions whose setup declared a function called
    ``name``. Frame shapes (google-genai ``LiveServerToolCall`` /
    ``LiveClientToolResponse``): the server sends
    ``{"toolCall": {"functionCalls": [{"id", "name", "args"}]}}`` and waits for
    ``{"tool_response": {"functionResponses": [{"id", "name", "response"}]}}``.

    Attributes:
        name: function name, as declared in ``setup.tools[].functionDeclarations``.
        args: JSON-serialisable arguments sent in the call.
        response_timeout_s: seconds to wait for the matching response before the
            call is recorded as an error and the reply goes ahead without it.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    response_timeout_s: float = 10.0


@dataclass(frozen=True)
class TurnInput:
    """What a :data:`Responder` gets to decide a reply.

    Attributes:
        kind: ``"audio"`` (a spoken user turn) or ``"text"`` (a ``client_content``
            turn with ``turnComplete: true``, or ``realtime_input.text``).
        text: audio: the stand-in's honest transcript, e.g. ``"(1.4 s of speech)"``;
            text: every text of the turn, ``"\\n"``-joined.
        contents: text turns: ``(role, text)`` pairs in arrival order, roles
            ``"user"``/``"model"``; empty for audio.
        user_text: text turns: the last user text that is not a bare placeholder
            such as ``"."`` (livekit-plugins-google appends one); else ``None``.
        speech_s: audio turns: seconds of speech, VAD start to VAD end.
        tool_name: the function that was called for this turn, if any.
        tool_output: the tool's answer as text (``response["output"]`` when present,
            else the response as JSON), if it answered in time.
        tool_error: why there is no tool output (timeout, cancelled), if so.
        seen: the last video frame, if one came within :data:`SEEN_WITHIN_S` of the turn's end.
    """

    kind: Literal["audio", "text"]
    text: str
    contents: tuple[tuple[str, str], ...] = ()
    user_text: str | None = None
    speech_s: float | None = None
    tool_name: str | None = None
    tool_output: str | None = None
    tool_error: str | None = None
    seen: VideoFrameRecord | None = None


Responder = Callable[[TurnInput], str]
"""Decides the reply text of a turn. Runs on the stand-in's server thread; keep it quick."""


def default_responder(turn: TurnInput) -> str:
    """The default reply policy.

    * a tool answered -> ``"The tool said: <output>"`` (``"The tool did not answer."``
      when it did not);
    * audio turn -> ``"I heard about 1.4 seconds of speech."``;
    * text mentioning "greet" (the agent's greeting instructions) -> a short greeting;
    * other text -> ``"You wrote: <text>"``;

    and when a video frame came lately (``turn.seen``), ``" I see a red picture, 640 by 480."``
    after it.
    """
    if turn.tool_name is not None:
        reply = f"The tool said: {turn.tool_output}" if turn.tool_output is not None else "The tool did not answer."
    elif turn.kind == "audio":
        reply = f"I heard about {turn.speech_s or 0.0:.1f} seconds of speech."
    elif "greet" in turn.text.lower():
        reply = "Hello! How can I help you today?"
    else:
        reply = f"You wrote: {turn.user_text or turn.text}"
    if turn.seen is not None:
        reply += f" I see a {turn.seen.colour_name} picture, {turn.seen.width} by {turn.seen.height}."
    return reply


@dataclass(frozen=True)
class StandinConfig:
    """Behaviour of the stand-in. Network settings are constructor arguments.

    Attributes:
        vad_threshold_dbfs: a 16 kHz frame is speech when its RMS is at or above
            this level (dBFS, full scale = 32768).
        vad_frame_ms: VAD frame length in ms (20 ms = 320 samples = 640 bytes).
        vad_min_speech_ms: ms of consecutive speech frames before speech starts.
        vad_silence_ms: ms of non-speech after which the user turn ends. A setup whose
            ``realtimeInputConfig.automaticActivityDetection.silenceDurationMs`` is
            set overrides it for that session (as the real service does); the value
            in force is :attr:`SessionRecord.vad_silence_ms`.
        reply_pacing: how fast reply audio is sent, in seconds of audio per second of
            wall time (1.0 = real time; the real service sends faster than real time);
            0 sends it all at once.
        reply_chunk_ms: ms of 24 kHz audio per ``modelTurn`` frame.
        response_delay_ms: simulated model latency, waited after the user turn ends (or
            the tool answers) before the reply is synthesised and sent. The stand-in's
            own work (espeak-ng, a few ms to tens of ms) comes on top;
            ``TurnRecord.first_audio_at - TurnRecord.end_declared_at`` is the total.
        hold_turn_complete: send ``turnComplete`` only once the client would have
            finished playing the reply (first audio frame + reply duration), as the
            real service does (the plugin notes "gemini delays turn_complete until it
            thinks client-side playback finished"). Barge-in is possible until then.
        tool_call: a function call to make on each audio turn, or ``None``.
        responder: the reply policy.
        espeak_voice: espeak-ng voice for replies.
        espeak_wpm: espeak-ng speed, words per minute.
        setup_timeout_s: seconds a new connection has to send its ``setup`` frame.
        answer_at_speech_start: reply at the first loud frame of speech (no start padding,
            no silence window), and let the rest of that utterance neither end another turn
            nor barge in. A model with no
            end-of-speech wait: what is left of a voice round trip is the appliance's own
            path (benchmarks and load tests).
        reply_audio: ``"speech"`` (espeak-ng) or ``"tone"``: a steady 440 Hz tone of about
            0.3 s per word, cheap to make at scale and without pauses, so a hole in it as
            heard by a caller is a hole made on the way (load tests count them).
    """

    vad_threshold_dbfs: float = -40.0
    vad_frame_ms: int = 20
    vad_min_speech_ms: int = 60
    vad_silence_ms: int = 500
    reply_pacing: float = 1.25
    reply_chunk_ms: int = 60
    response_delay_ms: int = 0
    hold_turn_complete: bool = True
    tool_call: ToolCallSpec | None = None
    responder: Responder = default_responder
    espeak_voice: str = "en-us"
    espeak_wpm: int = 175
    setup_timeout_s: float = 10.0
    answer_at_speech_start: bool = False
    reply_audio: Literal["speech", "tone"] = "speech"


# --------------------------------------------------------------------------------------
# Records (what tests read)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientMessageRecord:
    """One client frame.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        kind: ``"setup"``, ``"client_content"``, ``"tool_response"``,
            ``"context_update"``, ``"realtime_input.<field>"`` (``audio``,
            ``activity_start``, ``activity_end``, ``audio_stream_end``, ``text``,
            ``video``, ``media_chunks``) or ``"invalid"``.
        message: the parsed frame (``None`` when invalid). Treat it as read-only.
        size: bytes of the frame as received.
    """

    at: float
    kind: str
    message: types.LiveClientMessage | None
    size: int


@dataclass(frozen=True)
class AudioChunk:
    """One ``realtime_input.audio`` chunk kept in :attr:`SessionRecord.input_audio`.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        offset: byte offset of the chunk in the session's input audio.
        size: bytes (2 per sample, 16 kHz mono: 1600 bytes = 50 ms).
    """

    at: float
    offset: int
    size: int


@dataclass(frozen=True)
class VideoFrameRecord:
    """One video frame (``realtime_input.video``) kept in :attr:`SessionRecord.video_frames`.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        mime_type: as sent (livekit-plugins-google: ``image/jpeg``).
        format: what the bytes are, as Pillow reads them (``"JPEG"``, ``"PNG"``, ...).
        width / height: pixels.
        size: bytes of the encoded image.
        mean_rgb: the frame's mean colour, 0-255 per channel.
    """

    at: float
    mime_type: str
    format: str
    width: int
    height: int
    size: int
    mean_rgb: tuple[int, int, int]

    @property
    def colour_name(self) -> str:
        """The name in :data:`COLOUR_NAMES` nearest to :attr:`mean_rgb`."""
        return min(
            COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[n], self.mean_rgb, strict=True))
        )


def read_image(data: bytes) -> tuple[str, int, int, tuple[int, int, int]]:
    """Decode an image: (Pillow format name, width px, height px, mean RGB 0-255).

    Raises:
        ProtocolError: the bytes are not an image Pillow can read.
    """
    from PIL import Image, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mean = ImageStat.Stat(image.convert("RGB")).mean
            return image.format or "", image.width, image.height, (round(mean[0]), round(mean[1]), round(mean[2]))
    except (UnidentifiedImageError, OSError) as e:
        raise ProtocolError(f"video frame of {len(data)} bytes is not a readable image: {e}") from e


@dataclass(frozen=True)
class VadEvent:
    """A speech start or end found by the stand-in's VAD.

    Attributes:
        kind: ``"start"`` or ``"end"``.
        audio_ms: position in the session's input audio, ms from its first byte:
            start = first speech frame, end = end of the last speech frame.
        at: ``time.monotonic()`` arrival of the chunk holding that frame.
        declared_at: ``time.monotonic()`` when the VAD decided (start: after
            ``vad_min_speech_ms`` of speech; end: after ``vad_silence_ms`` of silence).
    """

    kind: Literal["start", "end"]
    audio_ms: float
    at: float
    declared_at: float


@dataclass(frozen=True)
class SetupRecord:
    """The session's ``setup`` frame.

    Attributes:
        raw: the frame's ``setup`` object as JSON (keys as the client sent them).
        model: e.g. ``"models/gemini-2.5-flash-native-audio-preview-09-2025"``.
        system_instruction: the system instruction's text parts, joined.
        function_names: names declared in ``tools[].functionDeclarations``.
        resumption_handle: ``sessionResumption.handle`` if the client sent one.
        generation_config: ``generationConfig`` as snake_case JSON.
        realtime_input_config: ``realtimeInputConfig`` as snake_case JSON, if sent.
        input_transcription: ``inputAudioTranscription`` was requested (the server
            sends ``inputTranscription`` only then).
        output_transcription: ``outputAudioTranscription`` was requested.
    """

    raw: dict[str, Any]
    model: str
    system_instruction: str
    function_names: tuple[str, ...]
    resumption_handle: str | None
    generation_config: dict[str, Any]
    realtime_input_config: dict[str, Any] | None
    input_transcription: bool
    output_transcription: bool


@dataclass
class TurnRecord:
    """One user turn and the stand-in's reply to it. Times are ``time.monotonic()``.

    Attributes:
        index: 0-based, per session.
        kind: ``"audio"`` or ``"text"``.
        text: audio: the description sent as ``inputTranscription``; text: the texts.
        contents: text turns: ``(role, text)`` pairs.
        end_reason: ``"vad"``, ``"activity_end"``, ``"audio_stream_end"``,
            ``"client_content"`` or ``"realtime_text"``.
        speech_start_ms / speech_end_ms: audio turns: VAD positions in the input
            audio, ms from its first byte.
        speech_start_at / speech_end_at: arrival times of those audio frames.
        end_declared_at: when the turn was declared over (VAD silence window elapsed,
            activityEnd, or text turn received).
        tool_call_id: id of the function call made for this turn, if any.
        reply_text: what the stand-in said (``None`` until decided).
        first_audio_at: when the first reply audio frame was sent.
        reply_audio_bytes: 24 kHz PCM16 bytes sent so far.
        generation_complete_at / turn_complete_at: when those frames were sent.
        interrupted: the reply was cut short (barge-in or a newer text turn).
        interrupted_at: when ``interrupted: true`` was sent.
    """

    index: int
    kind: Literal["audio", "text"]
    text: str
    end_reason: str
    end_declared_at: float
    contents: list[tuple[str, str]] = field(default_factory=list)
    speech_start_ms: float | None = None
    speech_end_ms: float | None = None
    speech_start_at: float | None = None
    speech_end_at: float | None = None
    tool_call_id: str | None = None
    reply_text: str | None = None
    first_audio_at: float | None = None
    reply_audio_bytes: int = 0
    generation_complete_at: float | None = None
    turn_complete_at: float | None = None
    interrupted: bool = False
    interrupted_at: float | None = None

    @property
    def reply_audio_ms(self) -> float:
        """Milliseconds of reply audio sent (24 kHz PCM16)."""
        return self.reply_audio_bytes / (SAMPLE_WIDTH * OUTPUT_SAMPLE_RATE) * 1000.0


@dataclass
class ToolCallRecord:
    """A function call the stand-in issued, and its answer.

    Attributes:
        id / name / args: as sent in ``toolCall.functionCalls[0]``.
        turn_index: the user turn that triggered it.
        issued_at: ``time.monotonic()`` when sent.
        response: ``functionResponses[].response`` with the matching id, if any.
        response_name: the ``name`` the client put in that response.
        responded_at: arrival time of that response.
        cancelled: a ``toolCallCancellation`` was sent (barge-in before the answer).
        error: ``None``, or why the call failed (no answer in time).
    """

    id: str
    name: str
    args: dict[str, Any]
    turn_index: int
    issued_at: float
    response: dict[str, Any] | None = None
    response_name: str | None = None
    responded_at: float | None = None
    cancelled: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ToolResponseRecord:
    """One entry of a client ``tool_response.functionResponses`` list.

    Attributes:
        at: ``time.monotonic()`` on arrival.
        id / name / response: as sent.
        matched: the id named a call that was still waiting for its answer.
    """

    at: float
    id: str | None
    name: str | None
    response: dict[str, Any] | None
    matched: bool


@dataclass(frozen=True)
class ResumptionRecord:
    """The handle a setup presented in ``sessionResumption.handle``.

    Attributes:
        handle: the handle.
        known: this stand-in issued it (in any earlier session, across restarts).
        resumed_session_id: the session that was given the handle, if known.
        resumed_turns: how many user turns that session had when it issued the handle:
            the context the handle restores ends after those turns.
    """

    handle: str
    known: bool
    resumed_session_id: str | None
    resumed_turns: int | None = None


@dataclass
class SessionRecord:
    """Everything recorded about one WebSocket connection.

    Read these through :attr:`GeminiLiveStandin.sessions` or
    :meth:`GeminiLiveStandin.wait_for`, which hand out copies. Times are
    ``time.monotonic()`` of the stand-in's process.

    Attributes:
        session_id: ``"s1"``, ``"s2"``, ... in connection order.
        api_version: from the path, e.g. ``"v1beta"``.
        api_key: the ``x-goog-api-key`` header (or ``key`` query parameter).
        headers: the handshake's request headers (lower-cased names).
        connected_at / closed_at: connection open and close times.
        close_code / close_reason: the close frame's code and reason
            (1011 is what livekit-plugins-google sends), ``None`` if none.
        setup: the setup frame, once received.
        vad_silence_ms: the end-of-turn silence window in force (ms).
        vad_prefix_ms: speech needed before a start is committed (ms; the setup's
            ``prefixPaddingMs``, else ``vad_min_speech_ms``).
        vad_start_dbfs / vad_end_dbfs: the level a frame needs to start speech / to keep
            it going, after the setup's start and end sensitivities (:func:`vad_thresholds`).
        automatic_activity_detection: ``False`` when the setup disabled it; turns
            are then delimited by ``activityStart``/``activityEnd``.
        messages: every client frame, in order.
        input_audio: all 16 kHz PCM16 mono bytes received, in order.
        audio_chunks: where each chunk sits in ``input_audio`` and when it came.
        vad_events: speech starts and ends found in the input audio.
        video_frames: the video frames received, in order.
        turns: user turns and replies.
        tool_calls / tool_responses: function calls issued / answers received.
        handles: resumption handles sent (``sessionResumptionUpdate.newHandle``).
        handle_audio_bytes: for each handle, how much of ``input_audio`` it covers (bytes
            received when it was issued).
        resumption: the handle this session's setup presented, if any.
        stalled: the stand-in was told to stall this session's setup (see
            :meth:`GeminiLiveStandin.stall_setups`): it read the setup and never answered.
        errors: protocol violations by the client, human-readable.
    """

    session_id: str
    api_version: str
    api_key: str
    headers: dict[str, str]
    connected_at: float
    vad_silence_ms: int
    vad_prefix_ms: int = 0
    vad_start_dbfs: float = 0.0
    vad_end_dbfs: float = 0.0
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    setup: SetupRecord | None = None
    automatic_activity_detection: bool = True
    messages: list[ClientMessageRecord] = field(default_factory=list)
    input_audio: bytearray = field(default_factory=bytearray)
    audio_chunks: list[AudioChunk] = field(default_factory=list)
    vad_events: list[VadEvent] = field(default_factory=list)
    video_frames: list[VideoFrameRecord] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_responses: list[ToolResponseRecord] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    handle_audio_bytes: list[int] = field(default_factory=list)
    resumption: ResumptionRecord | None = None
    stalled: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def input_audio_ms(self) -> float:
        """Milliseconds of 16 kHz input audio received."""
        return len(self.input_audio) / (SAMPLE_WIDTH * INPUT_SAMPLE_RATE) * 1000.0

    def messages_of(self, kind: str) -> list[ClientMessageRecord]:
        """The client frames of one :attr:`ClientMessageRecord.kind`."""
        return [m for m in self.messages if m.kind == kind]

    def snapshot(self) -> SessionRecord:
        """A copy that later server activity does not change (messages are shared)."""
        return dataclasses.replace(
            self,
            headers=dict(self.headers),
            messages=list(self.messages),
            input_audio=bytearray(self.input_audio),
            audio_chunks=list(self.audio_chunks),
            vad_events=list(self.vad_events),
            video_frames=list(self.video_frames),
            turns=[copy.copy(t) for t in self.turns],
            tool_calls=[copy.deepcopy(c) for c in self.tool_calls],
            tool_responses=list(self.tool_responses),
            handles=list(self.handles),
            handle_audio_bytes=list(self.handle_audio_bytes),
            errors=list(self.errors),
        )


@dataclass(frozen=True)
class RejectedHandshake:
    """An opening handshake the stand-in refused.

    Attributes:
        at: ``time.monotonic()``.
        path: the request path (with query).
        status: HTTP status sent (404 unknown path, 401 no API key, or the status
            set with :meth:`GeminiLiveStandin.refuse_handshakes`).
    """

    at: float
    path: str
    status: int


# --------------------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------------------


def pcm16_dbfs(pcm: bytes | np.ndarray) -> float:
    """RMS level of PCM16 samples in dBFS (full scale 32768); ``-inf`` for silence."""
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray)) else pcm
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample PCM16 mono by linear interpolation (test-quality, no filtering).

    Args:
        pcm: little-endian int16 samples at ``src_rate`` Hz.
        src_rate / dst_rate: sample rates in Hz.

    Returns:
        little-endian int16 samples at ``dst_rate`` Hz.
    """
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if src_rate == dst_rate or x.size == 0:
        return bytes(pcm)
    n_out = int(round(x.size * dst_rate / src_rate))
    t_out = np.arange(n_out) * (src_rate / dst_rate)
    y = np.interp(t_out, np.arange(x.size), x)
    return bytes(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes())


def _parse_wav(data: bytes) -> tuple[int, bytes]:
    """(sample rate Hz, PCM16 bytes) from a mono 16-bit WAV whose sizes may be bogus.

    espeak-ng ``--stdout`` writes a streaming header (RIFF and data sizes
    0x7ffff000), so the ``wave`` module cannot be trusted with it.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if channels != 1 or bits != 16:
                raise ValueError(f"expected mono 16-bit WAV, got {channels} ch {bits} bit")
        elif chunk_id == b"data":
            pcm = data[body:]
            return rate, pcm[: len(pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH]
        pos = body + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


@functools.lru_cache(maxsize=256)
def speech_pcm(
    text: str, sample_rate: int = OUTPUT_SAMPLE_RATE, voice: str = "en-us", wpm: int = 175
) -> bytes:
    """``text`` spoken by espeak-ng, as PCM16 mono at ``sample_rate`` Hz (cached).

    Used for the stand-in's replies (24 kHz) and handy for fake microphones
    (16 kHz). If espeak-ng is not installed, returns a 440 Hz tone of about
    0.3 s per word instead and logs that it did.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        log.warning("espeak-ng not found: speaking %r as a tone instead of speech", text)
        seconds = 0.3 * max(1, len(text.split()))
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        tone = 0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)
        return tone.astype("<i2").tobytes()
    wav = subprocess.run(
        [espeak, "--stdout", "--stdin", "-v", voice, "-s", str(wpm)],
        input=text.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    rate, pcm = _parse_wav(wav)
    return resample_pcm16(pcm, rate, sample_rate)


#: dB by which a sensitivity setting moves the energy VAD's threshold (see `vad_thresholds`).
SENSITIVITY_DB = 6.0


def vad_thresholds(base_dbfs: float, aad: types.AutomaticActivityDetection | None) -> tuple[float, float]:
    """(start, end) frame thresholds in dBFS for a setup's activity-detection sensitivities.

    The real service's detector is not an energy VAD; this is the stand-in's honest
    approximation of the documented meaning (google-genai ``StartSensitivity`` /
    ``EndSensitivity``): start HIGH "detects the start of speech more often", so quieter
    frames start it (``base - SENSITIVITY_DB``), LOW needs louder ones; end HIGH "ends speech
    more often", so a frame must be louder to keep speech going (``base + SENSITIVITY_DB``),
    LOW lets quieter tails continue it. Unspecified: ``base`` for both.
    """
    start = end = base_dbfs
    if aad is not None:
        if aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_HIGH:
            start -= SENSITIVITY_DB
        elif aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_LOW:
            start += SENSITIVITY_DB
        if aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_HIGH:
            end += SENSITIVITY_DB
        elif aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_LOW:
            end -= SENSITIVITY_DB
    return start, end


#: Seconds of tone per word of a reply spoken as a tone (espeak-ng at 175 wpm: ~0.34 s).
TONE_S_PER_WORD = 0.3
#: Level of the reply tone, dBFS (RMS).
TONE_DBFS = -16.0


@functools.lru_cache(maxsize=64)
def tone_pcm(words: int, sample_rate: int = OUTPUT_SAMPLE_RATE, hz: float = 440.0) -> bytes:
    """A steady sine of ``TONE_S_PER_WORD`` s per word (at least one) at ``TONE_DBFS``, PCM16
    mono at ``sample_rate`` Hz, with 5 ms fades so it starts and ends without a click."""
    n = int(max(1, words) * TONE_S_PER_WORD * sample_rate)
    t = np.arange(n) / sample_rate
    amplitude = 32768 * 10 ** (TONE_DBFS / 20) * math.sqrt(2)
    wave = amplitude * np.sin(2 * np.pi * hz * t)
    fade = min(n // 2, sample_rate * 5 // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return wave.astype("<i2").tobytes()


class EnergyVad:
    """Energy voice-activity detector over 16 kHz PCM16 mono.

    Each ``frame_ms`` frame is speech when its RMS level is at or above
    ``threshold_dbfs``. Speech starts after ``min_speech_ms`` of consecutive speech
    frames (its start is the first of them) and ends after ``silence_ms`` of
    frames below ``end_threshold_dbfs`` (default: ``threshold_dbfs``; its end is the
    end of the last speech frame). Positions are in audio time, so the result does not
    depend on how fast audio arrives.
    """

    def __init__(
        self,
        *,
        sample_rate: int = INPUT_SAMPLE_RATE,
        frame_ms: int = 20,
        threshold_dbfs: float = -40.0,
        min_speech_ms: int = 60,
        silence_ms: int = 500,
        end_threshold_dbfs: float | None = None,
    ) -> None:
        self._frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self._frame_ms = frame_ms
        self._threshold = threshold_dbfs
        self._end_threshold = threshold_dbfs if end_threshold_dbfs is None else end_threshold_dbfs
        self._min_speech_frames = max(1, math.ceil(min_speech_ms / frame_ms))
        self._silence_frames_needed = max(1, math.ceil(silence_ms / frame_ms))
        self._pending = bytearray()
        self._frame_index = 0
        self._run = 0
        self._run_start: tuple[int, float] = (0, 0.0)
        self._silence = 0
        self._last_voiced: tuple[int, float] = (0, 0.0)
        self.in_speech = False

    def feed(self, pcm: bytes, at: float) -> list[VadEvent]:
        """Process a chunk that arrived at ``at`` (monotonic s); returns events found."""
        self._pending += pcm
        events: list[VadEvent] = []
        while len(self._pending) >= self._frame_bytes:
            frame = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            level = pcm16_dbfs(frame)
            voiced = level >= (self._end_threshold if self.in_speech else self._threshold)
            index = self._frame_index
            self._frame_index += 1
            if not self.in_speech:
                if not voiced:
                    self._run = 0
                    continue
                if self._run == 0:
                    self._run_start = (index, at)
                self._run += 1
                if self._run >= self._min_speech_frames:
                    self.in_speech = True
                    self._silence = 0
                    self._last_voiced = (index + 1, at)
                    start_frame, start_at = self._run_start
                    events.append(VadEvent("start", start_frame * self._frame_ms, start_at, at))
            elif voiced:
                self._silence = 0
                self._last_voiced = (index + 1, at)
            else:
                self._silence += 1
                if self._silence >= self._silence_frames_needed:
                    events.append(self._end(at))
        return events

    def flush(self, at: float) -> VadEvent | None:
        """End speech now (activityEnd / audioStreamEnd); ``None`` if not in speech."""
        return self._end(at) if self.in_speech else None

    def _end(self, declared_at: float) -> VadEvent:
        self.in_speech = False
        self._run = 0
        self._silence = 0
        end_frame, end_at = self._last_voiced
        return VadEvent("end", end_frame * self._frame_ms, end_at, declared_at)


# --------------------------------------------------------------------------------------
# Frame parsing and building
# --------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """A client frame the real service would refuse."""


def parse_client_frame(raw: str | bytes) -> tuple[types.LiveClientMessage, dict[str, Any]]:
    """Parse one client frame with google-genai's own ``LiveClientMessage``.

    Accepts either key spelling (the SDK mixes snake_case and camelCase: see the
    notes). ``setup.realtimeInputConfig`` is sent by the SDK but is not a field of
    ``types.LiveClientSetup`` in google-genai 3.4.0 (whose models forbid extra keys),
    so it is split off, validated as ``types.RealtimeInputConfig`` and returned in
    the second element as ``{"realtime_input_config": RealtimeInputConfig}``.

    Audio ``data`` is base64 with the URL-safe alphabet (pydantic's
    ``ser_json_bytes="base64"``); pydantic decodes both alphabets strictly, and
    the result is cross-checked against ``base64.urlsafe_b64decode``.

    Raises:
        ProtocolError: not JSON, not a ``LiveClientMessage``, or undecodable audio.
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"frame is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError("frame is not a JSON object")
    extras: dict[str, Any] = {}
    setup = data.get("setup")
    if isinstance(setup, dict):
        setup = dict(setup)
        data = {**data, "setup": setup}
        for key in ("realtimeInputConfig", "realtime_input_config"):
            if key in setup:
                try:
                    extras["realtime_input_config"] = types.RealtimeInputConfig.model_validate(setup.pop(key))
                except pydantic.ValidationError as e:
                    raise ProtocolError(f"invalid setup.{key}: {_first_error(e)}") from e
    try:
        message = types.LiveClientMessage.model_validate(data)
    except pydantic.ValidationError as e:
        raise ProtocolError(f"not a LiveClientMessage: {_first_error(e)}") from e
    set_fields = [name for name in type(message).model_fields if getattr(message, name) is not None]
    if len(set_fields) != 1:
        raise ProtocolError(f"a client message carries exactly one field, got {set_fields}")
    if message.realtime_input is not None and message.realtime_input.audio is not None:
        raw_input = data.get("realtime_input") or data.get("realtimeInput") or {}
        encoded = (raw_input.get("audio") or {}).get("data")
        if isinstance(encoded, str) and message.realtime_input.audio.data is not None:
            normalised = encoded.replace("+", "-").replace("/", "_")
            expected = base64.urlsafe_b64decode(normalised + "=" * (-len(normalised) % 4))
            if expected != message.realtime_input.audio.data:
                raise ProtocolError("audio base64 decoded differently by pydantic and urlsafe_b64decode")
    return message, extras


def _first_error(e: pydantic.ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def message_kind(message: types.LiveClientMessage) -> str:
    """The :attr:`ClientMessageRecord.kind` of a parsed client frame."""
    if message.realtime_input is not None:
        ri = message.realtime_input
        for name in type(ri).model_fields:
            if getattr(ri, name) is not None:
                return f"realtime_input.{name}"
        return "realtime_input"
    for name in type(message).model_fields:
        if getattr(message, name) is not None:
            return name
    return "empty"


def encode_server_message(message: types.LiveServerMessage) -> bytes:
    """A server frame as google-genai parses it: camelCase JSON, URL-safe base64 bytes.

    Sent as a binary WebSocket frame, like the real service (google-genai reads
    frames with ``recv(decode=False)`` and accepts text or binary).
    """
    payload = message.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(payload, separators=(",", ":")).encode()


def _content_text(content: Any) -> str:
    """Text of a ``ContentUnion`` (Content, Part, str or a list of them)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, types.Content):
        return "".join(p.text or "" for p in content.parts or [])
    if isinstance(content, types.Part):
        return content.text or ""
    if isinstance(content, list):
        return "".join(_content_text(c) for c in content)
    return ""


def _mime_rate(mime_type: str | None) -> int | None:
    """Sample rate of ``audio/pcm;rate=N``; 16 000 for bare ``audio/pcm``; else None."""
    if not mime_type or not mime_type.startswith("audio/pcm"):
        return None
    match = _RATE_RE.search(mime_type)
    return int(match.group(1)) if match else INPUT_SAMPLE_RATE


def _tool_output_text(response: dict[str, Any] | None) -> str:
    """A function response as reply text: its ``output`` field, else its JSON."""
    if not response:
        return ""
    output = response.get("output")
    if isinstance(output, str):
        return output
    return json.dumps(response if output is None else output, ensure_ascii=False)


def _text_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


# --------------------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------------------


@dataclass
class _ActiveReply:
    turn: TurnRecord
    task: asyncio.Task[None]
    tool_ids: list[str] = field(default_factory=list)


class _LiveSession:
    """Serves one WebSocket connection. Lives on the stand-in's event loop."""

    def __init__(self, standin: GeminiLiveStandin, conn: ServerConnection, record: SessionRecord) -> None:
        self._standin = standin
        self._conn = conn
        self._rec = record
        self._cfg = standin.config
        self._vad: EnergyVad | None = None
        self._interrupts_on_activity = True
        self._transparent_resumption = False
        self._consumed_index = -1
        self._manual_start: tuple[float, float] | None = None
        self._speech_start: VadEvent | None = None
        self._answered_early = False  # answer_at_speech_start: replied to the utterance in progress
        self._pending_context: list[tuple[str, str]] = []
        self._reply: _ActiveReply | None = None
        self._tool_waiters: dict[str, asyncio.Future[types.FunctionResponse]] = {}
        self._call_ids = itertools.count(1)
        self._prompt_tokens = 0
        self._image_tokens = 0  # of the frames received so far (part of `_prompt_tokens`)

    # ---- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        try:
            raw = await asyncio.wait_for(self._conn.recv(), self._cfg.setup_timeout_s)
        except TimeoutError:
            self._error(f"no setup frame within {self._cfg.setup_timeout_s} s")
            await self._conn.close(1008, "setup timeout")
            return
        message = self._ingest(raw)
        if message is None or message[0].setup is None:
            self._error("the first client message must be setup")
            await self._conn.close(1007, "first message must be setup")
            return
        await self._on_setup(message[0], message[1], raw)
        async for raw in self._conn:
            parsed = self._ingest(raw)
            if parsed is None:
                await self._conn.close(1007, "invalid frame")
                return
            await self._dispatch(parsed[0], parsed[2])

    async def stall(self) -> None:
        """Read the setup frame (recorded as usual), then answer nothing until the client leaves."""
        with contextlib.suppress(TimeoutError):
            raw = await asyncio.wait_for(self._conn.recv(), self._cfg.setup_timeout_s)
            self._ingest(raw)
        await self._conn.wait_closed()

    async def aclose(self) -> None:
        """Cancel work in flight (the connection is gone or going)."""
        if self._reply is not None and not self._reply.task.done():
            self._reply.task.cancel()
            await asyncio.wait([self._reply.task])

    # ---- incoming ---------------------------------------------------------------

    def _ingest(self, raw: str | bytes) -> tuple[types.LiveClientMessage, dict[str, Any], float] | None:
        at = time.monotonic()
        size = len(raw)
        try:
            message, extras = parse_client_frame(raw)
        except ProtocolError as e:
            with self._standin._mutate():
                self._rec.messages.append(ClientMessageRecord(at, "invalid", None, size))
                self._rec.errors.append(str(e))
            log.warning("%s: %s", self._rec.session_id, e)
            return None
        self._consumed_index += 1
        with self._standin._mutate():
            self._rec.messages.append(ClientMessageRecord(at, message_kind(message), message, size))
        return message, extras, at

    async def _dispatch(self, message: types.LiveClientMessage, at: float) -> None:
        if message.setup is not None:
            self._error("setup sent twice")
        elif message.realtime_input is not None:
            await self._on_realtime_input(message.realtime_input, at)
        elif message.client_content is not None:
            await self._on_client_content(message.client_content, at)
        elif message.tool_response is not None:
            self._on_tool_response(message.tool_response, at)
        # context_update: recorded only.

    async def _on_setup(
        self, message: types.LiveClientMessage, extras: dict[str, Any], raw: str | bytes
    ) -> None:
        setup = message.setup
        assert setup is not None
        ric: types.RealtimeInputConfig | None = extras.get("realtime_input_config")
        aad = ric.automatic_activity_detection if ric else None
        silence_ms = (
            aad.silence_duration_ms if aad and aad.silence_duration_ms else None
        ) or self._cfg.vad_silence_ms
        prefix_ms = aad.prefix_padding_ms if aad and aad.prefix_padding_ms is not None else self._cfg.vad_min_speech_ms
        if self._cfg.answer_at_speech_start:
            prefix_ms = 0  # the first loud frame is the start (and the answer)
        start_dbfs, end_dbfs = vad_thresholds(self._cfg.vad_threshold_dbfs, aad)
        automatic = not (aad and aad.disabled)
        self._interrupts_on_activity = not (
            ric and ric.activity_handling == types.ActivityHandling.NO_INTERRUPTION
        )
        self._transparent_resumption = bool(setup.session_resumption and setup.session_resumption.transparent)
        functions = tuple(
            fd.name or ""
            for tool in (setup.tools or [])
            if isinstance(tool, types.Tool)
            for fd in (tool.function_declarations or [])
        )
        handle = setup.session_resumption.handle if setup.session_resumption else None
        record = SetupRecord(
            raw=json.loads(raw)["setup"],
            model=setup.model or "",
            system_instruction=_content_text(setup.system_instruction),
            function_names=functions,
            resumption_handle=handle,
            generation_config=(
                setup.generation_config.model_dump(mode="json", exclude_none=True)
                if setup.generation_config
                else {}
            ),
            realtime_input_config=ric.model_dump(mode="json", exclude_none=True) if ric else None,
            input_transcription=setup.input_audio_transcription is not None,
            output_transcription=setup.output_audio_transcription is not None,
        )
        self._vad = EnergyVad(
            frame_ms=self._cfg.vad_frame_ms,
            threshold_dbfs=start_dbfs,
            end_threshold_dbfs=end_dbfs,
            min_speech_ms=prefix_ms,
            silence_ms=silence_ms,
        )
        resumption = self._standin._lookup_handle(handle) if handle else None
        self._prompt_tokens = _text_tokens(record.system_instruction)
        with self._standin._mutate():
            self._rec.setup = record
            self._rec.vad_silence_ms = silence_ms
            self._rec.vad_prefix_ms = prefix_ms
            self._rec.vad_start_dbfs, self._rec.vad_end_dbfs = start_dbfs, end_dbfs
            self._rec.automatic_activity_detection = automatic
            self._rec.resumption = resumption
        log.info(
            "%s: setup model=%s functions=%s resumed=%s",
            self._rec.session_id,
            record.model,
            list(functions),
            resumption.resumed_session_id if resumption else None,
        )
        await self._send(types.LiveServerMessage(setup_complete=types.LiveServerSetupComplete()))
        await self._send_resumption_update()

    async def _on_realtime_input(self, ri: types.LiveClientRealtimeInput, at: float) -> None:
        if ri.audio is not None:
            await self._on_audio(ri.audio, at)
        elif ri.video is not None:
            self._on_video(ri.video, at)
        elif ri.media_chunks:
            for blob in ri.media_chunks:
                if (blob.mime_type or "").startswith("audio/"):
                    await self._on_audio(blob, at)
                elif (blob.mime_type or "").startswith("image/"):
                    self._on_video(blob, at)
        elif ri.activity_start is not None:
            self._manual_start = (self._rec.input_audio_ms, at)
            if self._reply_active() and self._interrupts_on_activity:
                await self._interrupt()
        elif ri.activity_end is not None:
            await self._end_speech("activity_end", at)
        elif ri.audio_stream_end:
            await self._end_speech("audio_stream_end", at)
        elif ri.text is not None:
            await self._start_text_turn([("user", ri.text)], "realtime_text", at)

    async def _on_audio(self, blob: types.Blob, at: float) -> None:
        data = blob.data or b""
        rate = _mime_rate(blob.mime_type)
        if rate != INPUT_SAMPLE_RATE:
            self._error(f"audio chunk of {len(data)} bytes is {blob.mime_type!r}, not audio/pcm;rate=16000")
            return
        if len(data) % SAMPLE_WIDTH:
            self._error(f"audio chunk of odd length {len(data)} bytes (PCM16 has 2 bytes per sample)")
        with self._standin._mutate():
            self._rec.audio_chunks.append(AudioChunk(at, len(self._rec.input_audio), len(data)))
            self._rec.input_audio += data
        if self._vad is None or not self._rec.automatic_activity_detection:
            return
        for event in self._vad.feed(data, at):
            await self._on_vad_event(event, "vad")

    def _on_video(self, blob: types.Blob, at: float) -> None:
        """A still frame of the caller's camera or screen: must be the image its type says."""
        data = blob.data or b""
        try:
            fmt, width, height, mean_rgb = read_image(data)
        except ProtocolError as e:
            self._error(str(e))
            return
        mime_type = blob.mime_type or ""
        if mime_type != f"image/{fmt.lower()}":
            self._error(f"video frame is {fmt} but its mime_type is {mime_type!r}")
        frame = VideoFrameRecord(at, mime_type, fmt, width, height, len(data), mean_rgb)
        with self._standin._mutate():
            self._rec.video_frames.append(frame)
        self._image_tokens += IMAGE_TOKENS_PER_FRAME
        self._prompt_tokens += IMAGE_TOKENS_PER_FRAME
        log.debug("%s: video frame %dx%d %s, %d bytes", self._rec.session_id, width, height, fmt, len(data))

    def _last_seen(self, at: float) -> VideoFrameRecord | None:
        frames = self._rec.video_frames
        return frames[-1] if frames and at - frames[-1].at <= SEEN_WITHIN_S else None

    async def _end_speech(self, reason: str, at: float) -> None:
        """activityEnd / audioStreamEnd: end the user's speech now, if any."""
        if self._vad is not None and self._rec.automatic_activity_detection:
            event = self._vad.flush(at)
            if event is not None:
                await self._on_vad_event(event, reason)
            return
        if self._manual_start is not None:
            start_ms, start_at = self._manual_start
            self._manual_start = None
            await self._start_audio_turn(
                VadEvent("start", start_ms, start_at, start_at),
                VadEvent("end", self._rec.input_audio_ms, at, at),
                reason,
            )

    async def _on_vad_event(self, event: VadEvent, reason: str) -> None:
        with self._standin._mutate():
            self._rec.vad_events.append(event)
        if event.kind == "start":
            self._speech_start = event
            if self._cfg.answer_at_speech_start and not self._answered_early:
                # Answer now; the rest of this utterance is the same turn.
                self._answered_early = True
                await self._start_audio_turn(event, event, "speech_start")
            elif self._reply_active() and self._interrupts_on_activity:
                await self._interrupt()
        elif self._answered_early:
            self._answered_early, self._speech_start = False, None
        else:
            start, self._speech_start = self._speech_start or event, None
            await self._start_audio_turn(start, event, reason)

    async def _on_client_content(self, content: types.LiveClientContent, at: float) -> None:
        texts = [
            (turn.role or "user", part.text)
            for turn in content.turns or []
            for part in turn.parts or []
            if part.text
        ]
        self._pending_context.extend(texts)
        self._prompt_tokens += sum(_text_tokens(t) for _, t in texts)
        if content.turn_complete:
            contents, self._pending_context = self._pending_context, []
            await self._start_text_turn(contents, "client_content", at)

    def _on_tool_response(self, response: types.LiveClientToolResponse, at: float) -> None:
        for fr in response.function_responses or []:
            waiter = self._tool_waiters.get(fr.id or "")
            matched = waiter is not None and not waiter.done()
            with self._standin._mutate():
                self._rec.tool_responses.append(ToolResponseRecord(at, fr.id, fr.name, fr.response, matched))
                if matched:
                    call = next(c for c in self._rec.tool_calls if c.id == fr.id)
                    call.response, call.response_name, call.responded_at = fr.response, fr.name, at
            if matched:
                assert waiter is not None
                waiter.set_result(fr)
            else:
                self._error(f"tool response with id {fr.id!r} (name {fr.name!r}) answers no pending call")

    # ---- turns and replies ------------------------------------------------------

    def _reply_active(self) -> bool:
        return self._reply is not None and not self._reply.task.done()

    async def _start_audio_turn(self, start: VadEvent, end: VadEvent, reason: str) -> None:
        speech_s = max(0.0, end.audio_ms - start.audio_ms) / 1000.0
        description = f"({speech_s:.1f} s of speech)"
        turn = TurnRecord(
            index=len(self._rec.turns),
            kind="audio",
            text=description,
            end_reason=reason,
            end_declared_at=end.declared_at,
            speech_start_ms=start.audio_ms,
            speech_end_ms=end.audio_ms,
            speech_start_at=start.at,
            speech_end_at=end.at,
        )
        if self._reply_active():
            await self._interrupt()
        with self._standin._mutate():
            self._rec.turns.append(turn)
        log.info("%s: user turn %d ended (%s): %s", self._rec.session_id, turn.index, reason, description)
        self._pending_context.clear()
        self._prompt_tokens += round(speech_s * AUDIO_TOKENS_PER_SECOND)
        if self._rec.setup and self._rec.setup.input_transcription:
            await self._send_content(input_transcription=types.Transcription(text=description, finished=True))
        turn_input = TurnInput(
            kind="audio", text=description, speech_s=speech_s, seen=self._last_seen(end.declared_at)
        )
        self._begin_reply(turn, turn_input)

    async def _start_text_turn(self, contents: list[tuple[str, str]], reason: str, at: float) -> None:
        if self._reply_active():
            await self._interrupt()
        text = "\n".join(t for _, t in contents)
        user_texts = [t for role, t in contents if role == "user" and not _PLACEHOLDER_RE.match(t)]
        turn = TurnRecord(
            index=len(self._rec.turns),
            kind="text",
            text=text,
            end_reason=reason,
            end_declared_at=at,
            contents=list(contents),
        )
        with self._standin._mutate():
            self._rec.turns.append(turn)
        log.info("%s: text turn %d: %r", self._rec.session_id, turn.index, text[:80])
        turn_input = TurnInput(
            kind="text", text=text, contents=tuple(contents), user_text=user_texts[-1] if user_texts else None,
            seen=self._last_seen(at),
        )
        self._begin_reply(turn, turn_input)

    def _begin_reply(self, turn: TurnRecord, turn_input: TurnInput) -> None:
        task = asyncio.get_running_loop().create_task(self._reply_flow(turn, turn_input))
        task.add_done_callback(self._reply_done)
        self._reply = _ActiveReply(turn, task)

    def _reply_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ConnectionClosed):
            log.error("%s: reply failed", self._rec.session_id, exc_info=error)
            with self._standin._mutate():
                self._rec.errors.append(f"stand-in failure while replying: {error!r}")

    async def _reply_flow(self, turn: TurnRecord, turn_input: TurnInput) -> None:
        spec = self._cfg.tool_call
        setup = self._rec.setup
        if (
            turn.kind == "audio"
            and spec is not None
            and setup is not None
            and spec.name in setup.function_names
        ):
            turn_input = await self._call_tool(turn, turn_input, spec)
        if self._cfg.response_delay_ms:
            await asyncio.sleep(self._cfg.response_delay_ms / 1000.0)
        text = self._cfg.responder(turn_input)
        if self._cfg.reply_audio == "tone":
            audio = tone_pcm(len(text.split()))
        else:
            audio = await asyncio.to_thread(
                speech_pcm, text, OUTPUT_SAMPLE_RATE, self._cfg.espeak_voice, self._cfg.espeak_wpm
            )
        with self._standin._mutate():
            turn.reply_text = text
        await self._speak(turn, text, audio)

    async def _call_tool(self, turn: TurnRecord, turn_input: TurnInput, spec: ToolCallSpec) -> TurnInput:
        call_id = f"function-call-{self._rec.session_id}-{next(self._call_ids)}"
        waiter: asyncio.Future[types.FunctionResponse] = asyncio.get_running_loop().create_future()
        self._tool_waiters[call_id] = waiter
        assert self._reply is not None
        self._reply.tool_ids.append(call_id)
        call = ToolCallRecord(call_id, spec.name, dict(spec.args), turn.index, time.monotonic())
        with self._standin._mutate():
            turn.tool_call_id = call_id
            self._rec.tool_calls.append(call)
        await self._send(
            types.LiveServerMessage(
                tool_call=types.LiveServerToolCall(
                    function_calls=[types.FunctionCall(id=call_id, name=spec.name, args=dict(spec.args))]
                )
            )
        )
        try:
            response = await asyncio.wait_for(asyncio.shield(waiter), spec.response_timeout_s)
        except TimeoutError:
            error = f"no tool response for {call_id} within {spec.response_timeout_s} s"
            with self._standin._mutate():
                call.error = error
            self._error(error)
            return dataclasses.replace(turn_input, tool_name=spec.name, tool_error=error)
        finally:
            self._tool_waiters.pop(call_id, None)
        return dataclasses.replace(
            turn_input, tool_name=spec.name, tool_output=_tool_output_text(response.response)
        )

    async def _speak(self, turn: TurnRecord, text: str, audio: bytes) -> None:
        """Send the reply: audio chunks with interleaved transcription, then the turn end."""
        chunk_bytes = OUTPUT_SAMPLE_RATE * self._cfg.reply_chunk_ms // 1000 * SAMPLE_WIDTH
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)] or [b""]
        words = text.split(" ")
        pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        chunk_s = self._cfg.reply_chunk_ms / 1000.0
        pacing = self._cfg.reply_pacing
        output_transcription = bool(self._rec.setup and self._rec.setup.output_transcription)
        start = time.monotonic()
        sent_pieces = 0
        for i, chunk in enumerate(chunks):
            if pacing > 0:
                delay = start + i * chunk_s / pacing - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            part = types.Part(inline_data=types.Blob(data=chunk, mime_type=OUTPUT_MIME_TYPE))
            await self._send_content(model_turn=types.Content(parts=[part]))
            with self._standin._mutate():
                if turn.first_audio_at is None:
                    turn.first_audio_at = time.monotonic()
                turn.reply_audio_bytes += len(chunk)
            due = len(pieces) * (i + 1) // len(chunks)
            if output_transcription and due > sent_pieces:
                piece = "".join(pieces[sent_pieces:due])
                sent_pieces = due
                await self._send_content(output_transcription=types.Transcription(text=piece))
        await self._send_content(generation_complete=True)
        with self._standin._mutate():
            turn.generation_complete_at = time.monotonic()
        if self._cfg.hold_turn_complete and turn.first_audio_at is not None:
            playback_end = turn.first_audio_at + len(audio) / (SAMPLE_WIDTH * OUTPUT_SAMPLE_RATE)
            await asyncio.sleep(max(0.0, playback_end - time.monotonic()))
        await self._finish_turn(
            turn,
            response_tokens=round(len(audio) / (SAMPLE_WIDTH * OUTPUT_SAMPLE_RATE) * AUDIO_TOKENS_PER_SECOND),
        )

    async def _finish_turn(self, turn: TurnRecord, response_tokens: int) -> None:
        await self._send_content(turn_complete=True)
        with self._standin._mutate():
            turn.turn_complete_at = time.monotonic()
        prompt = self._prompt_tokens
        self._prompt_tokens += response_tokens
        prompt_details = (
            [types.ModalityTokenCount(modality=types.MediaModality.IMAGE, token_count=self._image_tokens)]
            if self._image_tokens
            else None
        )
        usage = types.UsageMetadata(
            prompt_token_count=prompt,
            response_token_count=response_tokens,
            total_token_count=prompt + response_tokens,
            prompt_tokens_details=prompt_details,
            response_tokens_details=[
                types.ModalityTokenCount(modality=types.MediaModality.AUDIO, token_count=response_tokens)
            ],
        )
        await self._send(types.LiveServerMessage(usage_metadata=usage))
        await self._send_resumption_update()

    async def _interrupt(self) -> None:
        """Barge-in: stop the reply in flight, then ``interrupted`` and ``turnComplete``."""
        reply = self._reply
        if reply is None or reply.task.done():
            return
        pending = [i for i in reply.tool_ids if i in self._tool_waiters and not self._tool_waiters[i].done()]
        reply.task.cancel()
        await asyncio.wait([reply.task])
        if pending:
            with self._standin._mutate():
                for call in self._rec.tool_calls:
                    if call.id in pending:
                        call.cancelled = True
            await self._send(
                types.LiveServerMessage(
                    tool_call_cancellation=types.LiveServerToolCallCancellation(ids=pending)
                )
            )
        await self._send_content(interrupted=True)
        with self._standin._mutate():
            reply.turn.interrupted = True
            reply.turn.interrupted_at = time.monotonic()
        log.info("%s: reply to turn %d interrupted", self._rec.session_id, reply.turn.index)
        await self._finish_turn(
            reply.turn, response_tokens=round(reply.turn.reply_audio_ms / 1000 * AUDIO_TOKENS_PER_SECOND)
        )

    # ---- outgoing ---------------------------------------------------------------

    async def _send(self, message: types.LiveServerMessage) -> None:
        await self._conn.send(encode_server_message(message))

    async def _send_content(self, **fields: Any) -> None:
        await self._send(types.LiveServerMessage(server_content=types.LiveServerContent(**fields)))

    async def _send_resumption_update(self) -> None:
        handle = self._standin._issue_handle(self._rec)
        update = types.LiveServerSessionResumptionUpdate(
            new_handle=handle,
            resumable=True,
            # Only sent for transparent resumption (types.LiveServerSessionResumptionUpdate).
            last_consumed_client_message_index=self._consumed_index if self._transparent_resumption else None,
        )
        await self._send(types.LiveServerMessage(session_resumption_update=update))

    async def go_away(self, time_left_s: float) -> None:
        await self._send(
            types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left=f"{time_left_s:g}s"))
        )
        await asyncio.sleep(time_left_s)
        await self._conn.close(1000, "session ended after goAway")

    def _error(self, text: str) -> None:
        with self._standin._mutate():
            self._rec.errors.append(text)
        log.warning("%s: %s", self._rec.session_id, text)


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


def _load_or_create_ca(cert_dir: Path) -> tuple[trustme.CA, Path]:
    """The stand-in's CA from ``cert_dir``, created on first use.

    Reusing it across restarts keeps clients that loaded the CA file once
    (an agent worker) able to reconnect to a restarted stand-in.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_file, key_file = cert_dir / CA_FILE_NAME, cert_dir / CA_KEY_FILE_NAME
    if ca_file.exists() and key_file.exists():
        return trustme.CA.from_pem(ca_file.read_bytes(), key_file.read_bytes()), ca_file
    ca = trustme.CA(organization_name="Gemini Live stand-in")
    key_file.touch(mode=0o600)
    ca.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


class GeminiLiveStandin:
    """A Gemini Live ``BidiGenerateContent`` server on a background thread.

    Serves ``wss://HOST:PORT/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent``
    with a certificate for ``127.0.0.1``, ``::1`` and ``localhost`` signed by a CA
    written to :attr:`ca_file`. Point google-genai at :attr:`base_url` and trust
    :attr:`ca_file` (see :meth:`http_options`).

    Handshakes to other paths get HTTP 404; handshakes without an
    ``x-goog-api-key`` header (or ``key`` query parameter) get HTTP 401. Any
    non-empty key is accepted.

    Records are kept across :meth:`stop`/:meth:`start` (which also keep the port
    and CA, so a client can reconnect to a "restarted" service).

    Args:
        config: behaviour; defaults to ``StandinConfig()``.
        host: address to bind (127.0.0.1).
        port: TCP port; 0 picks a free one.
        cert_dir: where the CA (``gemini-standin-ca.pem`` and its key) lives; reused
            if present. ``None`` uses a private temporary directory.
    """

    def __init__(
        self,
        config: StandinConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: str | Path | None = None,
    ) -> None:
        self.config = config or StandinConfig()
        self.host = host
        self._port = port
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if cert_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="gemini-standin-")
            cert_dir = self._tempdir.name
        ca, self._ca_file = _load_or_create_ca(Path(cert_dir))
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(self._server_ssl)
        self._cond = threading.Condition()
        self._sessions: list[SessionRecord] = []
        self._rejected: list[RejectedHandshake] = []
        self._handles: dict[str, tuple[str, int]] = {}
        self._refusal: tuple[int, int | None, float | None] | None = None
        self._stalls: int | None = 0
        self._live: dict[str, tuple[_LiveSession, ServerConnection]] = {}
        self._session_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # ---- public: where and how to connect ------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``, for ``HttpOptions.base_url`` or ``GOOGLE_GEMINI_BASE_URL``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "127.0.0.1") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self._port}"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the server certificate."""
        return self._ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts only :attr:`ca_file`."""
        return ssl.create_default_context(cafile=str(self._ca_file))

    def http_options(self, **overrides: Any) -> types.HttpOptions:
        """``HttpOptions`` for ``genai.Client`` or livekit-plugins-google's ``RealtimeModel``.

        google-genai passes ``async_client_args["ssl"]`` to ``websockets.connect``
        (``BaseApiClient._ensure_websocket_ssl_ctx`` / ``AsyncLive.connect``).
        """
        return types.HttpOptions(
            base_url=self.base_url, async_client_args={"ssl": self.ssl_context()}, **overrides
        )

    # ---- public: life cycle ----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Start serving on a background thread; returns :attr:`base_url`."""
        if self._thread is not None:
            raise RuntimeError("stand-in already running")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._thread_main, name="gemini-live-standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("stand-in did not start")
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("stand-in failed to start") from self._start_error
        log.info("Gemini Live stand-in listening on %s (CA %s)", self.base_url, self._ca_file)
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Close all connections (code 1001) and the listening socket; join the thread."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """:meth:`stop`, then remove the temporary certificate directory, if any."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> GeminiLiveStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public: records ---------------------------------------------------------------

    @property
    def sessions(self) -> list[SessionRecord]:
        """Copies of all session records, in connection order."""
        with self._cond:
            return [s.snapshot() for s in self._sessions]

    def session(self, index: int = -1) -> SessionRecord:
        """A copy of one session record (default: the latest)."""
        with self._cond:
            return self._sessions[index].snapshot()

    @property
    def rejected_handshakes(self) -> list[RejectedHandshake]:
        """Handshakes refused with 401/404."""
        with self._cond:
            return list(self._rejected)

    def errors(self) -> list[tuple[str, str]]:
        """All protocol errors as ``(session_id, message)``."""
        with self._cond:
            return [(s.session_id, e) for s in self._sessions for e in s.errors]

    def wait_for(
        self, predicate: Callable[[list[SessionRecord]], object], timeout: float = 10.0
    ) -> list[SessionRecord]:
        """Block until ``predicate(sessions)`` is truthy; return a copy of the sessions.

        ``predicate`` is called with the live records while the stand-in's lock is
        held, each time a record changes: it must only read them, quickly, and keep
        no references. Use the returned copies afterwards.

        Raises:
            TimeoutError: not true within ``timeout`` seconds; the message
                summarises the sessions.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._sessions):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; {self._summary()}")
                self._cond.wait(remaining)
            return [s.snapshot() for s in self._sessions]

    # ---- public: faults ----------------------------------------------------------------

    def disconnect(
        self,
        session_id: str | None = None,
        *,
        code: int = 1011,
        reason: str = "stand-in fault",
        abrupt: bool = False,
    ) -> None:
        """Close a live session (default: the latest) with ``code``, or drop TCP if ``abrupt``."""
        _, conn = self._live_session(session_id)

        async def _close() -> None:
            if abrupt:
                conn.transport.abort()
            else:
                await conn.close(code, reason)

        self._run_coroutine(_close())

    def refuse_handshakes(
        self, status: int = 429, *, count: int | None = None, retry_after_s: float | None = None
    ) -> None:
        """Answer the next ``count`` handshakes (every one if ``None``) with HTTP ``status``.

        What the real service does at the WebSocket upgrade for a bad key (401/403) or an
        exhausted quota (429, optionally with ``Retry-After``). Refused handshakes are listed
        in :attr:`rejected_handshakes`; :meth:`accept_handshakes` ends the refusal.
        A refused TCP connection (nothing listening) is :meth:`stop`.
        """
        with self._mutate():
            self._refusal = (status, count, retry_after_s)

    def stall_setups(self, *, count: int | None = None) -> None:
        """Accept the next ``count`` connections (all if ``None``), read their setup, never answer.

        A hung service: the TLS and WebSocket handshakes succeed, ``setupComplete`` never
        comes. The session is recorded with ``stalled=True`` and stays open until the
        client gives up. :meth:`accept_handshakes` ends it for new connections.
        """
        with self._mutate():
            self._stalls = count

    def accept_handshakes(self) -> None:
        """Serve new connections normally again (ends :meth:`refuse_handshakes` / :meth:`stall_setups`)."""
        with self._mutate():
            self._refusal = None
            self._stalls = 0

    def _take_fault(self, kind: Literal["refusal", "stall"]) -> Any:
        """Consume one pending refusal or stall; returns it (or None / False)."""
        with self._mutate():
            if kind == "refusal":
                if self._refusal is None:
                    return None
                status, count, retry_after = self._refusal
                if count is not None:
                    self._refusal = (status, count - 1, retry_after) if count > 1 else None
                return status, retry_after
            if self._stalls == 0:
                return False
            if self._stalls is not None:
                self._stalls -= 1
            return True

    def send_handle(self, session_id: str | None = None) -> None:
        """Send a live session a ``sessionResumptionUpdate`` now (the real service sends them
        at times of its choosing, also while the user speaks)."""
        live, _ = self._live_session(session_id)
        self._run_coroutine(live._send_resumption_update())

    def go_away(self, session_id: str | None = None, *, time_left_s: float = 5.0) -> None:
        """Send ``goAway{timeLeft}`` to a live session, then close it (1000) when time is up."""
        live, _ = self._live_session(session_id)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(live.go_away(time_left_s), self._loop)

    # ---- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[None]:
        with self._cond:
            yield
            self._cond.notify_all()

    def _summary(self) -> str:
        if not self._sessions:
            return "no sessions"
        return "; ".join(
            f"{s.session_id}: setup={'yes' if s.setup else 'no'} audio={s.input_audio_ms:.0f}ms "
            f"turns={[(t.kind, t.reply_text, t.interrupted) for t in s.turns]} "
            f"tool_calls={len(s.tool_calls)} closed={s.close_code} errors={s.errors}"
            for s in self._sessions
        )

    def _issue_handle(self, record: SessionRecord) -> str:
        handle = f"standin-{record.session_id}-{len(record.handles) + 1}-{secrets.token_hex(6)}"
        with self._mutate():
            self._handles[handle] = (record.session_id, len(record.turns))
            record.handles.append(handle)
            record.handle_audio_bytes.append(len(record.input_audio))
        return handle

    def _lookup_handle(self, handle: str) -> ResumptionRecord:
        with self._cond:
            issued = self._handles.get(handle)
        if issued is None:
            return ResumptionRecord(handle, False, None)
        return ResumptionRecord(handle, True, issued[0], issued[1])

    def _live_session(self, session_id: str | None) -> tuple[_LiveSession, ServerConnection]:
        with self._cond:
            if not self._live:
                raise LookupError("no live session")
            key = session_id or next(reversed(self._live))
            return self._live[key]

    def _run_coroutine(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            raise RuntimeError("stand-in not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start()
            self._start_error = e
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self._port,
            ssl=self._server_ssl,
            process_request=self._process_request,
            compression=None,
            max_size=16 * 2**20,
            logger=_ws_log,
        ) as server:
            self._port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop_event.wait()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        status: http.HTTPStatus | None = None
        if not _PATH_RE.match(url.path):
            status = http.HTTPStatus.NOT_FOUND
        elif not (request.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [""])[0]):
            status = http.HTTPStatus.UNAUTHORIZED
        retry_after: float | None = None
        if status is None:
            refusal = self._take_fault("refusal")
            if refusal is None:
                return None
            status, retry_after = http.HTTPStatus(refusal[0]), refusal[1]
        with self._mutate():
            self._rejected.append(RejectedHandshake(time.monotonic(), request.path, status.value))
        log.info("refused handshake %s: %d", request.path, status.value)
        response = conn.respond(status, f"{status.value} {status.phrase}\n")
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    async def _handle(self, conn: ServerConnection) -> None:
        request = conn.request
        assert request is not None
        url = urlsplit(request.path)
        match = _PATH_RE.match(url.path)
        record = SessionRecord(
            session_id=f"s{next(self._session_ids)}",
            api_version=match.group("version") if match else "",
            api_key=request.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [""])[0],
            headers={k.lower(): v for k, v in request.headers.raw_items()},
            connected_at=time.monotonic(),
            vad_silence_ms=self.config.vad_silence_ms,
        )
        live = _LiveSession(self, conn, record)
        stall = bool(self._take_fault("stall"))
        with self._mutate():
            self._sessions.append(record)
            self._live[record.session_id] = (live, conn)
            record.stalled = stall
        log.info("%s: connected (%s)%s", record.session_id, url.path, " - stalling its setup" if stall else "")
        try:
            if stall:
                await live.stall()
            else:
                await live.run()
        except ConnectionClosed:
            pass  # a close is normal, whatever the code; recorded below
        except Exception as e:
            log.exception("%s: stand-in failure", record.session_id)
            with self._mutate():
                record.errors.append(f"stand-in failure: {e!r}")
        finally:
            await live.aclose()
            with contextlib.suppress(Exception):
                await conn.close()
            received = conn.close_exc.rcvd if conn.close_exc else None
            sent = conn.close_exc.sent if conn.close_exc else None
            frame = received or sent
            with self._mutate():
                self._live.pop(record.session_id, None)
                record.closed_at = time.monotonic()
                record.close_code = frame.code if frame else None
                record.close_reason = frame.reason if frame else None
            log.info("%s: closed (%s)", record.session_id, record.close_code)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.standins.gemini_live``: serve until Ctrl-C or SIGTERM.

    Prints ``base_url=...`` and ``ca_file=...`` lines on stdout once listening.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443, help="0 picks a free port")
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "gemini-standin",
        help="where the CA PEM (and its key) is kept; reused across runs",
    )
    defaults = StandinConfig()
    parser.add_argument("--vad-threshold-dbfs", type=float, default=defaults.vad_threshold_dbfs)
    parser.add_argument("--vad-min-speech-ms", type=int, default=defaults.vad_min_speech_ms)
    parser.add_argument("--vad-silence-ms", type=int, default=defaults.vad_silence_ms)
    parser.add_argument("--reply-pacing", type=float, default=defaults.reply_pacing)
    parser.add_argument("--response-delay-ms", type=int, default=defaults.response_delay_ms)
    parser.add_argument("--answer-at-speech-start", action="store_true",
                        help="reply as soon as speech starts (no end-of-speech wait)")
    parser.add_argument("--reply-audio", choices=("speech", "tone"), default=defaults.reply_audio)
    parser.add_argument("--tool-call", metavar="NAME", help="call this declared function on each audio turn")
    parser.add_argument("--tool-args", metavar="JSON", default="{}", help="arguments for --tool-call")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    config = StandinConfig(
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        vad_min_speech_ms=args.vad_min_speech_ms,
        vad_silence_ms=args.vad_silence_ms,
        reply_pacing=args.reply_pacing,
        response_delay_ms=args.response_delay_ms,
        answer_at_speech_start=args.answer_at_speech_start,
        reply_audio=args.reply_audio,
        tool_call=ToolCallSpec(args.tool_call, json.loads(args.tool_args)) if args.tool_call else None,
    )
    standin = GeminiLiveStandin(config, host=args.host, port=args.port, cert_dir=args.cert_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    standin.start()
    print(f"base_url={standin.base_url}", flush=True)
    print(f"ca_file={standin.ca_file}", flush=True)
    while not stop.wait(0.5):
        pass
    standin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
