"""What the appliance itself tells a caller, outside the agent's speech: ``voice.notice``.

A notice is a reliable LiveKit data message on `TOPIC` whose payload is UTF-8 JSON
``{"code", "message", "closing"}`` (the token server's OpenAPI document describes it as
`RoomNotice`; its `dispatch_guard` sends ``no_agent_available``). A closing notice is also
set as the room's metadata, ``{"voice.notice": notice}``, which reaches the caller over the
signalling connection ahead of the room's close. Clients show ``message``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from livekit import api
from voice_calls.notices import TOPIC

logger = logging.getLogger("voice_agent.notices")


@dataclass(frozen=True)
class Notice:
    """One notice: a stable `code`, the words for the caller, and whether the call ends."""

    code: str
    message: str
    closing: bool = False

    def payload(self) -> bytes:
        """The data message's payload (UTF-8 JSON)."""
        return json.dumps({"code": self.code, "message": self.message, "closing": self.closing}).encode()


#: A new agent is being brought in (the last one was lost, or its worker is going away).
RECONNECTING = Notice("agent_reconnecting", "One moment, please: reconnecting you to the assistant\u2026")
#: The agent has no Gemini credentials (a first run before `.env` has them): the call ends
#: at once, and the page says why instead of waiting for an agent that will not come.
NOT_CONFIGURED = Notice(
    "agent_not_configured",
    "This assistant is not configured yet: the operator must set its Gemini credentials.",
    closing=True,
)
#: The agent was lost more often than it may be replaced: the call ends.
UNAVAILABLE = Notice(
    "agent_unavailable", "Sorry, the assistant was lost and could not be brought back. Please call again.", closing=True
)


async def send(lk: api.LiveKitAPI, room: str, notice: Notice, *, close_delay_s: float = 0.4) -> None:
    """Tell everyone in `room` (server API); a closing notice then closes the room.

    Raises:
        livekit.api.TwirpError: LiveKit refused or could not be reached.
    """
    if notice.closing:
        metadata = json.dumps({TOPIC: json.loads(notice.payload())})
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room, metadata=metadata))
    await lk.room.send_data(api.SendDataRequest(
        room=room, data=notice.payload(), kind=api.DataPacket.Kind.RELIABLE, topic=TOPIC))
    if notice.closing:
        await asyncio.sleep(close_delay_s)  # the data message first, then the close
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
