"""How strong the appliance's secrets must be: one bar for the native run's start-up check
(`scripts/stack.py`) and the token server's settings (`token_server.settings`)."""

from __future__ import annotations

#: LiveKit's `--dev` secret (`devkey: secret`); never acceptable outside a laptop.
LIVEKIT_DEV_SECRET = "secret"
#: Shortest LiveKit API secret (characters): livekit-server itself complains about shorter
#: ones outside dev mode. Operators' bearer keys are held to the same bar.
MIN_SECRET_LENGTH = 32
