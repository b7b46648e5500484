"""The agent worker: an AgentServer and the entrypoint that runs one call (one job).

The data path of a call, end to end (livekit-agents and the Google plugin wire
the middle of it; this module decides the call's life):

    browser mic (Opus, 48 kHz) -> LiveKit SFU -> RoomIO audio input (decoded PCM)
      -> RealtimeModel: resample to 16 kHz PCM16, 50 ms chunks -> Gemini Live (WebSocket)
      <- 24 kHz PCM16 audio, input/output transcriptions, tool calls
    RoomIO audio output -> LiveKit SFU -> browser speaker
    RoomIO text output  -> `lk.transcription` text streams -> live transcript

The call's life: start the session (listening) -> identify the caller -> personalise
-> greet -> converse; no caller within `participant_timeout_s` ends the job cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentServer, AgentSession, JobContext, room_io

from .assistant import Assistant
from .model import build_realtime_model
from .settings import AgentSettings
from .tools import Faq

logger = logging.getLogger("voice_agent")

settings = AgentSettings()
#: livekit-agents requires a threshold below 1 in production; full means `max_calls` calls.
_FULL = 0.999


def call_load(agent_server: AgentServer) -> float:
    """Worker load in [0, 1]: active calls / `max_calls`, scaled so `max_calls` calls is full."""
    return min(1.0, len(agent_server.active_jobs) / settings.max_calls * _FULL)


server = AgentServer(
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret.get_secret_value(),
    host=settings.health_host,
    port=settings.health_port,
    load_fnc=call_load,
    load_threshold=_FULL,
    drain_timeout=settings.drain_timeout_s,
)

if settings.ready_file is not None:

    @server.on("worker_registered")
    def _mark_ready(worker_id: str, _server_info: object) -> None:
        """Readiness: LiveKit now dispatches jobs to this worker."""
        settings.ready_file.write_text(worker_id + "\n")  # type: ignore[union-attr]


@dataclass(frozen=True)
class DispatchInfo:
    """Who the token server dispatched us for: the job metadata, JSON written by the token server.

    Shape: `{"participant_identity": str, "participant_name": str | null}`; both optional.
    """

    participant_identity: str | None = None
    participant_name: str | None = None

    @classmethod
    def parse(cls, metadata: str) -> DispatchInfo:
        """Parse job metadata; malformed or empty metadata gives an empty DispatchInfo."""
        try:
            data = json.loads(metadata) if metadata else {}
        except json.JSONDecodeError:
            logger.warning("ignoring dispatch metadata that is not JSON")
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls(data.get("participant_identity") or None, data.get("participant_name") or None)


async def _tell_caller(ctx: JobContext, text: str) -> None:
    """Show a line in the caller's transcript (when the model cannot speak it)."""
    await ctx.room.local_participant.send_text(
        text, topic="lk.transcription", attributes={"lk.transcription_final": "true"}
    )


@server.rtc_session(agent_name=settings.agent_name)
async def entrypoint(ctx: JobContext) -> None:
    """Run one call in `ctx.room` until the caller leaves or the job is shut down."""
    ctx.log_context_fields = {"room": ctx.room.name}
    dispatch = DispatchInfo.parse(ctx.job.metadata)

    missing = settings.missing_model_credentials()
    if missing:
        await ctx.connect()
        logger.error("cannot answer the call: %s", missing)
        await _tell_caller(ctx, "This assistant is not configured yet: the operator must set its Gemini credentials.")
        ctx.shutdown(reason=missing)
        return

    assistant = Assistant(instructions=settings.instructions, faq=Faq.load(settings.faq_path))
    # Gemini Live does turn detection and barge-in server-side: no local VAD or STT.
    session = AgentSession(llm=build_realtime_model(settings))
    # 1. start: join the room, then the session listens as soon as the caller's track arrives.
    await ctx.connect()
    await session.start(
        agent=assistant,
        room=ctx.room,
        room_options=room_io.RoomOptions(
            participant_identity=dispatch.participant_identity or NOT_GIVEN,
            participant_kinds=[rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD],
        ),
        record=False,
    )

    # 2. identify: the participant the token was issued to (or the first caller).
    try:
        participant = await asyncio.wait_for(
            ctx.wait_for_participant(identity=dispatch.participant_identity),
            timeout=settings.participant_timeout_s,
        )
    except TimeoutError:
        logger.info("no caller joined within %.0f s; ending the job", settings.participant_timeout_s)
        ctx.shutdown(reason="no participant joined")
        return
    ctx.log_context_fields = {"room": ctx.room.name, "participant": participant.identity}

    # 3. personalise and greet; tools unlock once the greeting has played.
    await assistant.greet(session, participant.name or dispatch.participant_name)
