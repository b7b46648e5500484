"""Builds the Gemini Live realtime model from settings.

Audio formats are fixed by the Gemini Live API and handled inside
livekit-plugins-google: 16 000 Hz PCM16 mono in (the plugin resamples the
48 kHz Opus-decoded caller audio and sends 50 ms chunks), 24 000 Hz PCM16 mono
out (see ../shared/notes/gemini-live-protocol.md).
"""

from __future__ import annotations

import ssl

from google.genai import types
from livekit.agents import NOT_GIVEN

from .resilience import ResilientRealtimeModel, RetryPolicy
from .settings import AgentSettings


def build_ssl_context(settings: AgentSettings) -> ssl.SSLContext | None:
    """Return an SSL context that also trusts `settings.gemini_ca_file`, or None.

    The system trust store stays in place; the extra PEM bundle is added to it
    (a re-signing corporate proxy, or the test stand-in's CA).

    Raises:
        FileNotFoundError, ssl.SSLError: when the CA file is missing or not PEM.
    """
    if settings.gemini_ca_file is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(settings.gemini_ca_file))
    return context


def build_http_options(settings: AgentSettings) -> types.HttpOptions | None:
    """HTTP options for google-genai: another base URL and/or an extra CA, or None.

    google-genai opens `wss://<base_url host>/ws/google.ai.generativelanguage.<version>.
    GenerativeService.BidiGenerateContent` and passes `async_client_args` on to the
    WebSocket connect, which is where the SSL context goes.
    """
    ssl_context = build_ssl_context(settings)
    if settings.gemini_base_url is None and ssl_context is None:
        return None
    return types.HttpOptions(
        base_url=settings.gemini_base_url,
        async_client_args={"ssl": ssl_context} if ssl_context is not None else None,
    )


def build_realtime_model(settings: AgentSettings) -> ResilientRealtimeModel:
    """Create the Gemini Live model (native audio) with our voice, temperature and transport.

    Server-side turn detection (Gemini's VAD) and input/output transcription are
    the plugin's defaults and are kept: they drive barge-in and the transcripts.
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
        context_window_compression=types.ContextWindowCompressionConfig(
            trigger_tokens=settings.gemini_compression_trigger_tokens,
            sliding_window=types.SlidingWindow(),
        ),
        model=settings.gemini_model,
        voice=settings.gemini_voice,
        temperature=settings.gemini_temperature,
        instructions=settings.instructions,
        api_key=api_key,
        vertexai=settings.use_vertexai,
        project=settings.google_cloud_project or NOT_GIVEN,
        http_options=http_options if http_options is not None else NOT_GIVEN,
    )
