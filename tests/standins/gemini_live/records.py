"""What the stand-in records about each connection: the records tests read.

Times are ``time.monotonic()`` of the stand-in's process. :class:`SessionRecord` holds
everything about one WebSocket connection; the server hands out copies
(:meth:`SessionRecord.snapshot`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from google.genai import types

from .protocol import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH
from .vad import VadEvent
from .video import VideoFrameRecord


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


