"""LiveKit's server API (Twirp over HTTP, protobuf bodies), called synchronously.

livekit-api's `LiveKitAPI` is asyncio-only; the token server's background work runs in a
plain thread (a greenlet under gevent), so this module makes the same calls with the
standard library: ``POST {url}/twirp/livekit.<Service>/<Method>`` with
``Content-Type: application/protobuf`` and a bearer token from livekit-api's
`AccessToken`, the grants each method needs being the ones livekit-api's own services
ask for (`room_admin` for the room, `room_create` to delete one). Messages are
livekit-protocol's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from typing import TypeVar

from google.protobuf.message import Message
from livekit import api

_M = TypeVar("_M", bound=Message)

#: LiveKit's participant kinds that are people calling (a browser or app, or a phone line).
CALLER_KINDS = frozenset({api.ParticipantInfo.Kind.STANDARD, api.ParticipantInfo.Kind.SIP})


class LiveKitError(Exception):
    """A Twirp error answer (`code` as LiveKit names it: ``not_found`` ...) or an
    unreachable server (`code` ``unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RoomAdmin:
    """The few room calls the token server makes on its own initiative.

    Args:
        url: livekit-server's URL as the agent worker registers with it (``ws://`` /
            ``wss://`` or ``http(s)://``; the API is on the same port).
        api_key, api_secret: LiveKit API credentials.
        timeout_s: per request, seconds.
    """

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_s: float = 3.0) -> None:
        base = url.rstrip("/")
        if base.startswith("ws"):
            base = "http" + base[2:]
        self._base = base
        self._key = api_key
        self._secret = api_secret
        self._timeout_s = timeout_s

    def list_participants(self, room: str) -> list[api.ParticipantInfo]:
        """Everyone in `room` now. Raises `LiveKitError` (``not_found`` once the room is gone)."""
        answer = self._call("RoomService", "ListParticipants", api.ListParticipantsRequest(room=room),
                            api.ListParticipantsResponse, api.VideoGrants(room_admin=True, room=room))
        return list(answer.participants)

    def list_dispatches(self, room: str) -> list[api.AgentDispatch]:
        """The room's agent dispatches, each with the jobs workers accepted for it
        (`state.jobs`; empty while no worker took it)."""
        answer = self._call("AgentDispatchService", "ListDispatch", api.ListAgentDispatchRequest(room=room),
                            api.ListAgentDispatchResponse, api.VideoGrants(room_admin=True, room=room))
        return list(answer.agent_dispatches)

    def create_dispatch(self, room: str, agent_name: str, metadata: str) -> api.AgentDispatch:
        """Ask LiveKit to dispatch `agent_name` to `room` again (with the job metadata)."""
        request = api.CreateAgentDispatchRequest(room=room, agent_name=agent_name, metadata=metadata)
        return self._call("AgentDispatchService", "CreateDispatch", request, api.AgentDispatch,
                          api.VideoGrants(room_admin=True, room=room))

    def send_json(self, room: str, topic: str, payload: dict[str, object]) -> None:
        """A reliable data message (UTF-8 JSON) to everyone in `room` on `topic`."""
        request = api.SendDataRequest(room=room, data=json.dumps(payload).encode(), topic=topic,
                                      kind=api.DataPacket.Kind.RELIABLE, nonce=uuid.uuid4().bytes)
        self._call("RoomService", "SendData", request, api.SendDataResponse,
                   api.VideoGrants(room_admin=True, room=room))

    def set_room_metadata(self, room: str, metadata: str) -> None:
        """Replace the room's metadata; participants get it over their signalling connection
        (livekit-client: `RoomEvent.RoomMetadataChanged`), in order with what follows."""
        self._call("RoomService", "UpdateRoomMetadata", api.UpdateRoomMetadataRequest(room=room, metadata=metadata),
                   api.Room, api.VideoGrants(room_admin=True, room=room))

    def delete_room(self, room: str) -> None:
        """Close `room`: every participant is disconnected (reason ``ROOM_DELETED``)."""
        self._call("RoomService", "DeleteRoom", api.DeleteRoomRequest(room=room), api.DeleteRoomResponse,
                   api.VideoGrants(room_create=True))

    def _call(self, service: str, method: str, request: Message, answer: type[_M], grants: api.VideoGrants) -> _M:
        token = (api.AccessToken(self._key, self._secret).with_grants(grants)
                 .with_ttl(timedelta(minutes=5)).to_jwt())
        http = urllib.request.Request(
            f"{self._base}/twirp/livekit.{service}/{method}",
            data=request.SerializeToString(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/protobuf"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(http, timeout=self._timeout_s) as response:  # noqa: S310 - our own server
                result = answer()
                result.ParseFromString(response.read())
                return result
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read() or b"{}")
            except ValueError:
                error = {}
            raise LiveKitError(str(error.get("code") or exc.code), str(error.get("msg") or exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise LiveKitError("unavailable", str(exc)) from None
