"""Minting LiveKit access tokens (livekit-api) for one caller in one fresh room.

No Flask in here: `mint_token` takes settings and a validated request, and returns
what the endpoint answers with.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from livekit import api

from .schemas import TokenRequest
from .settings import Settings, VideoInput

#: What a caller may always publish (LiveKit `TrackSource` names, as in a token's
#: ``canPublishSources``).
AUDIO_SOURCES = ("microphone",)
#: What each `VIDEO_INPUT` adds. Never ``screen_share_audio``: the model hears the caller
#: through the microphone only.
VIDEO_SOURCES: dict[VideoInput, tuple[str, ...]] = {
    "off": (),
    "camera": ("camera",),
    "screen": ("screen_share",),
    "both": ("camera", "screen_share"),
}


def publish_sources(video_input: VideoInput) -> list[str]:
    """The track sources a caller's token allows, e.g. ``["microphone", "camera"]``."""
    return [*AUDIO_SOURCES, *VIDEO_SOURCES[video_input]]


@dataclass(frozen=True)
class IssuedToken:
    """A minted join token and the names in it.

    `participant_name` is None when the caller gave none. `token` is the signed JWT:
    return it to the caller, never log it.
    """

    token: str
    room_name: str
    participant_identity: str
    participant_name: str | None
    publish_sources: tuple[str, ...] = AUDIO_SOURCES


def new_room_name() -> str:
    """An unguessable room name, ``room-`` + 22 URL-safe characters (128 random bits).

    Fresh per call on purpose: LiveKit ignores a token's agent dispatch when the room
    already exists.
    """
    return "room-" + secrets.token_urlsafe(16)


def new_identity() -> str:
    """A random caller identity, ``user-`` + 16 URL-safe characters (96 random bits)."""
    return "user-" + secrets.token_urlsafe(12)


def caller_grants(room_name: str, sources: list[str] | None = None) -> api.VideoGrants:
    """Least-privilege grants: join `room_name` only, publish `sources` only (default: the
    microphone; see `publish_sources`), subscribe, send data (the ``lk.chat`` text stream);
    no admin, create, list, record, hidden or own-metadata rights."""
    return api.VideoGrants(
        room_join=True,
        room=room_name,
        can_publish=True,
        can_publish_sources=list(sources or AUDIO_SOURCES),
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
    )


def room_configuration(
    settings: Settings, room_name: str, identity: str, name: str | None
) -> api.RoomConfiguration:
    """The room LiveKit creates when the caller joins, with the agent dispatched in the
    same step.

    Timeouts are in seconds. The dispatch metadata is JSON
    ``{"participant_identity": str, "participant_name": str | null}``.
    """
    metadata = json.dumps({"participant_identity": identity, "participant_name": name})
    return api.RoomConfiguration(
        name=room_name,
        empty_timeout=settings.room_empty_timeout_seconds,
        departure_timeout=settings.room_departure_timeout_seconds,
        max_participants=settings.room_max_participants,
        agents=[api.RoomAgentDispatch(agent_name=settings.agent_name, metadata=metadata)],
    )


def mint_token(
    settings: Settings,
    request: TokenRequest,
    identity: str | None = None,
    room_name: str | None = None,
) -> IssuedToken:
    """Mint a join token for a new room with the agent dispatched.

    The token lives `settings.token_ttl_seconds` seconds (it only gates the first
    connect). It may publish what `settings.video_input` allows (`publish_sources`).

    Args:
        identity: the caller's identity (from authentication); default the request's
            ``participant_identity``, else `new_identity()`.
        room_name: default `new_room_name()`.

    Raises:
        ValueError: from livekit-api if the key or secret is empty (prevented by `Settings`).
    """
    room_name = room_name or new_room_name()
    identity = identity or request.participant_identity or new_identity()
    name = request.participant_name
    sources = publish_sources(settings.video_input)
    builder = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        .with_identity(identity)
        .with_grants(caller_grants(room_name, sources))
        .with_room_config(room_configuration(settings, room_name, identity, name))
        .with_ttl(timedelta(seconds=settings.token_ttl_seconds))
    )
    if name is not None:
        builder = builder.with_name(name)
    if request.participant_metadata:
        builder = builder.with_metadata(request.participant_metadata)
    if request.participant_attributes:
        builder = builder.with_attributes(dict(request.participant_attributes))
    return IssuedToken(
        token=builder.to_jwt(),
        room_name=room_name,
        participant_identity=identity,
        participant_name=name,
        publish_sources=tuple(sources),
    )
