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

Audio formats (from google-genai and ``realtime_api.py``):

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

Modules, one concern each: :mod:`.protocol` (rates, path, frames in and out), :mod:`.vad`
(the energy VAD), :mod:`.speech` (espeak-ng speech, tones), :mod:`.video` (frames the caller
shows), :mod:`.tools` (function calls), :mod:`.faults` (handshake faults), :mod:`.records` and
:mod:`.recording` (what tests read, and its store), :mod:`.config` (behaviour, reply policy),
:mod:`.session` and :mod:`.reply` (one connection: turns in, replies out), :mod:`.server` (the
server and its controls), ``__main__`` (the command line).
"""

from .config import Responder, StandinConfig, TurnInput, default_responder
from .protocol import (
    AUDIO_TOKENS_PER_SECOND,
    IMAGE_TOKENS_PER_FRAME,
    INPUT_SAMPLE_RATE,
    OUTPUT_MIME_TYPE,
    OUTPUT_SAMPLE_RATE,
    SAMPLE_WIDTH,
    ProtocolError,
    encode_server_message,
    message_kind,
    parse_client_frame,
)
from .records import (
    AudioChunk,
    ClientMessageRecord,
    RejectedHandshake,
    ResumptionRecord,
    SessionRecord,
    SetupRecord,
    ToolCallRecord,
    ToolResponseRecord,
    TurnRecord,
)
from .server import CA_FILE_NAME, CA_KEY_FILE_NAME, GeminiLiveStandin
from .speech import TONE_DBFS, TONE_S_PER_WORD, speech_pcm, tone_pcm
from .tools import ToolCallSpec
from .vad import SENSITIVITY_DB, EnergyVad, VadEvent, vad_thresholds
from .video import COLOUR_NAMES, SEEN_WITHIN_S, VideoFrameRecord, read_image

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "CA_FILE_NAME",
    "CA_KEY_FILE_NAME",
    "COLOUR_NAMES",
    "IMAGE_TOKENS_PER_FRAME",
    "INPUT_SAMPLE_RATE",
    "OUTPUT_MIME_TYPE",
    "OUTPUT_SAMPLE_RATE",
    "SAMPLE_WIDTH",
    "SEEN_WITHIN_S",
    "SENSITIVITY_DB",
    "TONE_DBFS",
    "TONE_S_PER_WORD",
    "AudioChunk",
    "ClientMessageRecord",
    "EnergyVad",
    "GeminiLiveStandin",
    "ProtocolError",
    "RejectedHandshake",
    "Responder",
    "ResumptionRecord",
    "SessionRecord",
    "SetupRecord",
    "StandinConfig",
    "ToolCallRecord",
    "ToolCallSpec",
    "ToolResponseRecord",
    "TurnInput",
    "TurnRecord",
    "VadEvent",
    "VideoFrameRecord",
    "default_responder",
    "encode_server_message",
    "message_kind",
    "parse_client_frame",
    "read_image",
    "speech_pcm",
    "tone_pcm",
    "vad_thresholds",
]
