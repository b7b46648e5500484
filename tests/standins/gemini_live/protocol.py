"""Gemini Live's wire format as the stand-in speaks it: rates, the path, client frames in, server frames out.

Client frames are parsed with google-genai's own ``types.LiveClientMessage``; server frames
are built from ``types.LiveServerMessage`` and serialised the way the SDK reads them. Facts
from google-genai 3.4.0 (``live.py``, ``types.py``, ``_live_converters.py``) and
livekit-plugins-google 1.8.9 (``realtime/realtime_api.py``), as pinned in ``requirements.lock``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pydantic
from google.genai import types

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

# google-genai builds f"{base_url}/ws/google.ai.generativelanguage.{version}"
# ".GenerativeService.BidiGenerateContent" (live.py, AsyncLive.connect).
PATH_RE = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(?P<version>v[0-9a-z]+)"
    r"\.GenerativeService\.BidiGenerateContent$"
)
"""The WebSocket path of ``BidiGenerateContent``; group ``version`` is the API version."""
_RATE_RE = re.compile(r"rate=(\d+)")


class ProtocolError(Exception):
    """A client frame the real service would refuse."""


def parse_client_frame(raw: str | bytes) -> tuple[types.LiveClientMessage, dict[str, Any]]:
    """Parse one client frame with google-genai's own ``LiveClientMessage``.

    Accepts either key spelling (the SDK mixes snake_case and camelCase).
    ``setup.realtimeInputConfig`` is sent by the SDK but is not a field of
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


def content_text(content: Any) -> str:
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
        return "".join(content_text(c) for c in content)
    return ""


def mime_rate(mime_type: str | None) -> int | None:
    """Sample rate of ``audio/pcm;rate=N``; 16 000 for bare ``audio/pcm``; else None."""
    if not mime_type or not mime_type.startswith("audio/pcm"):
        return None
    match = _RATE_RE.search(mime_type)
    return int(match.group(1)) if match else INPUT_SAMPLE_RATE


def text_tokens(text: str) -> int:
    """A plausible token count for ``text`` (about four characters a token), for usageMetadata."""
    return max(1, len(text) // 4) if text else 0

