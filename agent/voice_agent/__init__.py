"""The appliance's agent worker (livekit-agents + Gemini Live). Run with `python -m voice_agent start`."""
