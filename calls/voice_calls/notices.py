"""What the appliance tells a caller outside the agent's speech: notices on topic ``voice.notice``.

A notice is a reliable LiveKit data message on `TOPIC` whose payload is UTF-8 JSON
``{"code", "message", "closing"}`` (the token server's OpenAPI document: `RoomNotice`). The
token server's dispatch guard and the agent workers' watchdog send them; clients show
``message``, and a ``closing`` one is also set as the room's metadata (``{TOPIC: notice}``).
"""

from __future__ import annotations

#: The LiveKit data-message topic of notices, and their key in the room's metadata.
TOPIC = "voice.notice"
