"""How the stand-in behaves: :class:`StandinConfig`, and the reply policy (:data:`Responder`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .tools import ToolCallSpec
from .video import VideoFrameRecord


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
        seen: the last video frame, if one came within :data:`~.video.SEEN_WITHIN_S` of the turn's end.
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

