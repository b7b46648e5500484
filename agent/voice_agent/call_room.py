"""The room side of a call: who it is for, holding the room, watching the caller, ending the job.

server.py's entrypoint runs the call's life with these: `hold_room` claims the room for one
job (claims.py) and opens its record, `watch_caller` ends the call when the caller hangs up
or does not come back, `tell_caller` puts a line in the caller's transcript, the clips cover
what the model cannot say, and `leave` / `end_call` end the job on purpose (anything else is
an interruption, which `on_session_end` tells a caller still in the room about).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from livekit import rtc
from livekit.agents import AgentSession, JobContext

from . import claims, metrics, notices, records
from .link import FILLER_TEXT, GIVE_UP_TEXT, clip_frames, load_clip
from .settings import AgentSettings

logger = logging.getLogger("voice_agent")


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


async def tell_caller(ctx: JobContext, text: str, caller_here: asyncio.Event | None = None) -> None:
    """Show a line in the caller's transcript (when the model cannot speak it).

    A text stream reaches only the participants in the room when it is sent, and the model
    connects while the caller may still be joining: with `caller_here`, wait for it first.
    """
    if caller_here is not None:
        await caller_here.wait()
    await ctx.room.local_participant.send_text(
        text, topic="lk.transcription", attributes={"lk.transcription_final": "true"}
    )


#: Jobs of this process that ended their call on purpose (all else is an interruption).
_left_on_purpose: set[str] = set()


def leave(ctx: JobContext, reason: str) -> None:
    """End the job on purpose (the call is over, or it is not ours)."""
    _left_on_purpose.add(ctx.job.id)
    ctx.shutdown(reason=reason)


async def on_session_end(ctx: JobContext) -> None:
    """Runs as the job ends, before it leaves the room: a job that did not end on purpose (its
    worker's drain timed out, or the worker stops) tells a caller still there that a new
    agent is coming (the watchdog brings one)."""
    if ctx.job.id in _left_on_purpose:
        return
    kinds = {p.kind for p in ctx.room.remote_participants.values()}
    if rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD not in kinds:
        return
    logger.warning("the job ends with the caller still in the room; telling them another agent comes")
    try:
        await ctx.room.local_participant.publish_data(
            notices.RECONNECTING.payload(), reliable=True, topic=notices.TOPIC)
    except Exception as exc:  # the room may be going away
        logger.info("could not tell the caller: %s", exc)


async def hold_room(
    ctx: JobContext, settings: AgentSettings, retention: records.Retention
) -> records.CallRecorder | None | Literal[False]:
    """Claim the room for this job (claims.py). The recorder, None without Redis, False if taken."""
    if not settings.redis_url:
        return None
    # Named connections: the watchdog tells a dead job from a stalled one by them.
    client = records.connect(settings.redis_url, client_name=claims.job_client_name(ctx.job.id))
    claim = claims.RoomClaim(client, ctx.room.name, ctx.job.id)
    ttl_ms = int(settings.room_claim_ttl_s * 1000)
    if await claim.take(ttl_ms) is False:
        logger.info("another agent already serves this room; this job leaves")
        await client.aclose()
        return False
    call = records.CallRecorder(client, ctx.room.name, ctx.job.id, retention=retention)

    async def keep_holding() -> None:
        while True:
            await asyncio.sleep(settings.room_claim_refresh_s)
            if not await claim.refresh(ttl_ms):
                logger.error("this call was handed to another job (this one was taken for dead); leaving")
                leave(ctx, "room claimed by another job")
                return

    holder = asyncio.create_task(keep_holding())

    async def let_go(reason: str) -> None:
        holder.cancel()
        call.event("lifecycle", {"event": "job_ended", "reason": reason})
        # The record's close must be written before the room is let go: the watchdog takes an
        # open call nobody holds for a lost agent.
        await call.aclose()
        await claim.release()
        await client.aclose()

    ctx.add_shutdown_callback(let_go)
    return call


def watch_caller(
    ctx: JobContext, call: records.CallRecorder | None, identity: str, left: Callable[[], str], return_timeout_s: float
) -> None:
    """End the call when the caller hangs up, or has not come back within the return timeout.

    `left` says why, when the caller left on purpose ("caller left"; a phone call just
    transferred: "transferred to ...").
    """
    state: dict[str, asyncio.Task[None] | None] = {"timer": None}

    async def wait_for_return() -> None:
        await asyncio.sleep(return_timeout_s)
        logger.info("the caller did not come back within %.0f s; ending the call", return_timeout_s)
        if call is not None:
            call.end("caller did not return")
        leave(ctx, "caller did not return")

    @ctx.room.on("participant_disconnected")
    def _left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity != identity:
            return
        # A phone line that drops never comes back: a new call is a new room.
        if (participant.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
                or participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP):
            reason = left()
            if call is not None:
                call.end(reason)
            leave(ctx, reason)
            return
        reason = reason_name(participant.disconnect_reason)
        logger.warning("the caller dropped (%s); waiting for them to come back", reason)
        if call is not None:
            call.event("lifecycle", {"event": "caller_dropped", "reason": reason})
        if state["timer"] is None or state["timer"].done():
            state["timer"] = asyncio.create_task(wait_for_return())

    @ctx.room.on("participant_connected")
    def _back(participant: rtc.RemoteParticipant) -> None:
        timer = state["timer"]
        if participant.identity == identity and timer is not None and not timer.done():
            timer.cancel()
            logger.info("the caller is back")
            if call is not None:
                call.event("lifecycle", {"event": "caller_returned"})


def reason_name(reason: int | None) -> str:
    """A LiveKit DisconnectReason as its name (CONNECTION_TIMEOUT, ...) for logs and records."""
    try:
        return rtc.DisconnectReason.Name(reason) if reason is not None else "UNKNOWN_REASON"  # type: ignore[arg-type]
    except ValueError:
        return str(reason)


async def play_give_up(session: AgentSession, wav: Path) -> None:
    """Say the give-up clip and wait until it has played (at most its length + 2 s)."""
    try:
        handle = session.say(GIVE_UP_TEXT, audio=clip_frames(wav), add_to_chat_ctx=False)
        rate, pcm = load_clip(wav)
        await asyncio.wait_for(handle.wait_for_playout(), len(pcm) / 2 / rate + 2.0)
    except (RuntimeError, TimeoutError) as exc:  # the session is closing, or playout stalled
        logger.info("give-up clip not played to its end: %s", exc)


def play_filler(session: AgentSession, counted: metrics.CallMetrics, wav: Path) -> None:
    """Say "One moment, please." with the pre-rendered clip (the model cannot speak now)."""
    try:
        session.say(FILLER_TEXT, audio=clip_frames(wav), add_to_chat_ctx=False)
    except RuntimeError as exc:  # the session is closing
        logger.debug("no filler: %s", exc)
        return
    counted.filler_played()


async def end_call(ctx: JobContext, call: records.CallRecorder | None, message: str, *, reason: str) -> None:
    """Tell the caller why the call ends, then end the job (the worker keeps running)."""
    logger.error("ending the call: %s", reason)
    if call is not None:
        call.end(reason)
    try:
        await tell_caller(ctx, message)
    except Exception as exc:  # the room may be gone already
        logger.warning("could not tell the caller: %s", exc)
    leave(ctx, reason)
