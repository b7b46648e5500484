"""Builds the Gemini Live realtime model from settings.

Audio formats are fixed by the Gemini Live API (livekit-plugins-google's
`INPUT_AUDIO_SAMPLE_RATE` and `OUTPUT_AUDIO_SAMPLE_RATE`): 16 000 Hz PCM16 mono in,
24 000 Hz PCM16 mono out. The call's room I/O (`room_io_options`) decodes the caller's
48 kHz Opus straight to 16 kHz, so the plugin does not resample again, and plays the
model's 24 kHz as it comes.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

from google.genai import types
from livekit import rtc
from livekit.agents import NOT_GIVEN, room_io
from livekit.plugins.google.realtime.realtime_api import INPUT_AUDIO_SAMPLE_RATE, OUTPUT_AUDIO_SAMPLE_RATE

from .resilience import ResilientRealtimeModel, RetryPolicy
from .settings import AgentSettings
from .vision import JPEG_OPTIONS


@functools.cache
def model_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The SSL context for the Gemini endpoint: the system's trust store, plus `ca_file` (PEM)
    when given (a re-signing corporate proxy, or the test stand-in's CA).

    Built once per process and shared by every call: loading the trust store costs about
    0.15 s of CPU, which would otherwise be spent at the start of each call, twice (google-genai
    builds one for its HTTP client and one for the WebSocket when none is given).

    Raises:
        FileNotFoundError, ssl.SSLError: when the CA file is missing or not PEM.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def build_http_options(settings: AgentSettings) -> types.HttpOptions:
    """HTTP options for google-genai: the base URL (None: Google's) and the shared SSL context.

    google-genai opens `wss://<base_url host>/ws/google.ai.generativelanguage.<version>.
    GenerativeService.BidiGenerateContent` with the `ssl` of `async_client_args`, and builds
    its HTTP client with the `verify` of `client_args`; given both, it makes no context of its own.
    """
    context = model_ssl_context(settings.gemini_ca_file)
    return types.HttpOptions(
        base_url=settings.gemini_base_url,
        client_args={"verify": context},
        async_client_args={"ssl": context},
    )


_START_SENSITIVITY = {"high": types.StartSensitivity.START_SENSITIVITY_HIGH,
                      "low": types.StartSensitivity.START_SENSITIVITY_LOW}
_END_SENSITIVITY = {"high": types.EndSensitivity.END_SENSITIVITY_HIGH,
                    "low": types.EndSensitivity.END_SENSITIVITY_LOW}


def build_realtime_input_config(settings: AgentSettings) -> types.RealtimeInputConfig:
    """Gemini Live's turn-taking from settings: `setup.realtimeInputConfig`.

    Automatic activity detection stays on (the model detects speech; the plugin's manual
    activity path is not used): silence duration and prefix padding in ms, start and end
    sensitivity, and whether the caller's speech interrupts a reply (barge-in). Unset
    values are left out, so the service's defaults apply (google-genai
    `types.AutomaticActivityDetection`, `types.ActivityHandling`).
    """
    detection = types.AutomaticActivityDetection(
        silence_duration_ms=settings.gemini_vad_silence_ms,
        prefix_padding_ms=settings.gemini_vad_prefix_padding_ms,
        start_of_speech_sensitivity=_START_SENSITIVITY.get(settings.gemini_vad_start_sensitivity or ""),
        end_of_speech_sensitivity=_END_SENSITIVITY.get(settings.gemini_vad_end_sensitivity or ""),
    )
    return types.RealtimeInputConfig(
        automatic_activity_detection=detection,
        activity_handling=(
            types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS
            if settings.gemini_barge_in
            else types.ActivityHandling.NO_INTERRUPTION
        ),
    )


def build_realtime_model(settings: AgentSettings) -> ResilientRealtimeModel:
    """Create the Gemini Live model (native audio) with our voice, temperature and transport.

    Server-side turn detection (Gemini's VAD, tuned by `build_realtime_input_config`) and
    input/output transcription drive barge-in and the transcripts.
    The model is the plugin's, made to survive connection faults (`resilience.py`), with
    context-window compression on so long calls pass the audio session cap.

    Raises:
        ValueError: from the plugin when no credentials are configured.
    """
    http_options = build_http_options(settings)
    api_key = settings.google_api_key.get_secret_value() if settings.google_api_key else NOT_GIVEN
    return ResilientRealtimeModel(
        retry_policy=RetryPolicy(
            give_up_after_s=settings.model_retry_give_up_s,
            connect_timeout_s=settings.model_connect_timeout_s,
        ),
        go_away_margin_s=settings.model_go_away_margin_s,
        input_chunk_ms=settings.model_input_chunk_ms,
        context_window_compression=types.ContextWindowCompressionConfig(
            trigger_tokens=settings.gemini_compression_trigger_tokens,
            sliding_window=types.SlidingWindow(),
        ),
        realtime_input_config=build_realtime_input_config(settings),
        model=settings.gemini_model,
        voice=settings.gemini_voice,
        temperature=settings.gemini_temperature,
        instructions=settings.instructions,
        api_key=api_key,
        vertexai=settings.use_vertexai,
        project=settings.google_cloud_project or NOT_GIVEN,
        http_options=http_options,
        image_encode_options=JPEG_OPTIONS,
    )


def room_io_options(
    settings: AgentSettings,
) -> tuple[room_io.AudioInputOptions, room_io.AudioOutputOptions, room_io.TextOutputOptions]:
    """How the call's audio meets the model, with the least buffering and work on the way.

    In: the caller's track decoded by LiveKit straight to the model's 16 kHz, in frames of
    `model_input_chunk_ms` (the plugin's resampler, which releases its output late, is then
    skipped), without automatic gain control (the caller's browser applies its own, and the
    model takes speech at any level). Out: the model's 24 kHz published as it comes, with DTX
    off, so the caller's jitter buffer does not hold back the first packets after a silence
    (RED stays the SDK's default: asking for it made Chromium play nothing of the agent's
    track, as tests/e2e/test_web.py shows). Transcript pacing: `transcript_sync`.
    """
    return (
        room_io.AudioInputOptions(
            sample_rate=INPUT_AUDIO_SAMPLE_RATE,
            frame_size_ms=settings.model_input_chunk_ms,
            auto_gain_control=False,
        ),
        room_io.AudioOutputOptions(
            sample_rate=OUTPUT_AUDIO_SAMPLE_RATE,
            track_publish_options=rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False
            ),
        ),
        room_io.TextOutputOptions(sync_transcription=settings.transcript_sync),
    )
