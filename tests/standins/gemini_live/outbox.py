"""The outgoing side of one connection: server frames out, and changes to its record."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from google.genai import types
from websockets.asyncio.server import ServerConnection

from .protocol import encode_server_message
from .recording import Recorder
from .records import SessionRecord

log = logging.getLogger("gemini_live_standin")


class Outbox:
    """Sends ``LiveServerMessage`` frames on one connection and notes what its client did wrong.

    Args:
        conn: the WebSocket connection.
        recorder: the stand-in's store; :meth:`mutate` is its lock.
        record: this connection's record.
    """

    def __init__(self, conn: ServerConnection, recorder: Recorder, record: SessionRecord) -> None:
        self.conn = conn
        self.recorder = recorder
        self.record = record

    def mutate(self) -> AbstractContextManager[None]:
        """Hold the store's lock while changing :attr:`record` (see :meth:`Recorder.mutate`)."""
        return self.recorder.mutate()

    async def send(self, message: types.LiveServerMessage) -> None:
        """Send one server frame (binary, camelCase JSON, as google-genai reads it)."""
        await self.conn.send(encode_server_message(message))

    async def send_content(self, **fields: Any) -> None:
        """Send ``serverContent`` with these ``types.LiveServerContent`` fields."""
        await self.send(types.LiveServerMessage(server_content=types.LiveServerContent(**fields)))

    def error(self, text: str) -> None:
        """Record a protocol violation by the client (and log it)."""
        with self.mutate():
            self.record.errors.append(text)
        log.warning("%s: %s", self.record.session_id, text)
