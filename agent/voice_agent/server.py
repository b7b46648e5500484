"""The agent worker: an AgentServer and the entrypoint that runs one call (one job).

The data path of a call, end to end (livekit-agents and the Google plugin wire
the middle of it; this module decides the call's life):

    browser mic (Opus, 48 kHz) -> LiveKit SFU -> RoomIO audio input (decoded to 16 kHz PCM16)
      -> RealtimeModel: 20 ms chunks -> Gemini Live (WebSocket)
      <- 24 kHz PCM16 audio, input/output transcriptions, tool calls
    RoomIO audio output (24 kHz, DTX off) -> LiveKit SFU -> browser speaker
    RoomIO text output  -> `lk.transcription` text streams -> live transcript
    browser camera / screen share (VIDEO_INPUT) -> RoomIO video input -> vision.py: paced,
      bounded frames -> RealtimeModel: JPEG -> Gemini Live

The call's life: start the session (it joins the room while the model connects) -> identify
the caller -> wait for the model link -> personalise -> greet -> converse; no caller within
`participant_timeout_s` ends the job cleanly. Model-link faults (drops, GoAway, refusals) are absorbed by
`resilience.py`; `link.py` decides what the caller hears and reads meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from livekit import rtc
from livekit.agents import (
    NOT_GIVEN,
    AgentServer,
    AgentSession,
    CloseEvent,
    CloseReason,
    JobContext,
    JobExecutorType,
    JobProcess,
    JobRequest,
    llm,
    room_io,
)
from voice_calls import budget
from voice_calls.records import accepted_key

from . import claims, guards, metrics, notices, operator_tools, records, telephony, vision
from .assistant import Assistant
from .capacity import CapacityPublisher
from .link import FILLER_TEXT, GIVE_UP_TEXT, CallLink, clip_frames, load_clip
from .model import build_realtime_model, model_ssl_context, room_io_options
from .settings import AgentSettings
from .tools import Faq
from .watchdog import CallWatchdog

logger = logging.getLogger("voice_agent")

settings = AgentSettings()
#: What a call's process runs, preloaded by the worker's forkserver: our modules, and what
#: livekit-agents imports lazily at a call's start (its loop monitor names them).
_CALL_MODULES = tuple(
    f"{__package__}.{name}"
    for name in (
        "assistant", "capacity", "claims", "guards", "link", "metrics", "model", "model_faults", "notices",
        "operator_tools", "records", "resilience", "telephony", "tools", "watchdog",
    )
) + ("livekit.agents.llm.async_toolset", "anyio._backends._asyncio", "anyio._core._sockets")
#: livekit-agents requires a threshold below 1 in production; full means `max_calls` calls.
_FULL = 0.999


def prewarm(_process: JobProcess) -> None:
    """Work done once per process, before any call (livekit-agents' `setup_fnc`), instead of at
    the start of each: the SSL context for the model's endpoint (the trust store costs ~0.15 s
    of CPU to load)."""
    model_ssl_context(settings.gemini_ca_file)


def call_load(agent_server: AgentServer) -> float:
    """Worker load in [0, 1]: active calls / `max_calls`, scaled so `max_calls` calls is full."""
    return min(1.0, len(agent_server.active_jobs) / settings.max_calls * _FULL)


server = AgentServer(
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret.get_secret_value(),
    host=settings.health_host,
    port=settings.worker_health_port,
    load_fnc=call_load,
    load_threshold=_FULL,
    drain_timeout=settings.drain_timeout_s,
    job_executor_type=JobExecutorType(settings.job_executor),
    initialize_process_timeout=settings.process_start_timeout_s,
    # Imported once in the forkserver and shared copy-on-write, so a call's process does not
    # spend a second of CPU importing them again (not this module: it builds the server).
    preload_modules=[*_CALL_MODULES, *operator_tools.call_modules(settings)],
    setup_fnc=prewarm,
    **({"num_idle_processes": settings.idle_processes} if settings.idle_processes is not None else {}),
)
retention = records.Retention(settings.records_retention_days, settings.records_max_events_per_call)

_watchdog_task: asyncio.Task[None] | None = None
_capacity_task: asyncio.Task[None] | None = None


@server.on("worker_registered")
def _on_registered(worker_id: str, _server_info: object) -> None:
    """Readiness (LiveKit now dispatches jobs to this worker), the capacity it publishes for
    admission control, and the call watchdog.

    The ready file is JSON: `{"worker_id": str, "health_port": int}` (the port the health
    server bound, which differs from AGENT_HEALTH_PORT when that is 0 or several workers share
    a host); the native run's health check and the container's HEALTHCHECK read it.
    """
    global _watchdog_task, _capacity_task
    if settings.ready_file is not None:
        ready = {"worker_id": worker_id, "health_port": server.worker_info.http_port}
        settings.ready_file.write_text(json.dumps(ready) + "\n")
    if settings.redis_url and _capacity_task is None:
        publisher = CapacityPublisher(
            records.connect(settings.redis_url),
            max_calls=settings.max_calls,
            rooms=lambda: [job.job.room.name for job in server.active_jobs],
            draining=lambda: server.draining,
        )
        _capacity_task = asyncio.get_running_loop().create_task(publisher.run(), name="capacity")
    if settings.redis_url and (_watchdog_task is None or _watchdog_task.done()):
        watchdog = CallWatchdog(
            redis_url=settings.redis_url,
            livekit_url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret.get_secret_value(),
            agent_name=settings.agent_name,
            max_redispatches=settings.max_redispatches,
            claim_ttl_s=settings.room_claim_ttl_s,
            confirm_s=1.5 * settings.room_claim_refresh_s,
            retention_s=retention.seconds,
        )
        _watchdog_task = asyncio.get_running_loop().create_task(watchdog.run(), name="call-watchdog")


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


async def _tell_caller(ctx: JobContext, text: str, caller_here: asyncio.Event | None = None) -> None:
    """Show a line in the caller's transcript (when the model cannot speak it).

    A text stream reaches only the participants in the room when it is sent, and the model
    connects while the caller may still be joining: with `caller_here`, wait for it first.
    """
    if caller_here is not None:
        await caller_here.wait()
    await ctx.room.local_participant.send_text(
        text, topic="lk.transcription", attributes={"lk.transcription_final": "true"}
    )


_marker: records.aioredis.Redis | None = None


async def _accept(request: JobRequest) -> None:
    """Take every job LiveKit offers (the load threshold already keeps a full worker out), and
    mark the call taken in Redis first: `accept()` returns only once a job process has been
    found and started (seconds on a busy box), while the token server's dispatch guard and
    the watchdog must know at once that a worker has the call (`accepted_key`)."""
    global _marker
    room = request.room.name
    if settings.redis_url and room:
        _marker = _marker or records.connect(settings.redis_url)
        try:
            await _marker.set(accepted_key(room), request.id, ex=600)
        except records.RedisError as exc:
            logger.warning("could not mark room %s taken: %s", room, exc)
    await request.accept()


#: Jobs of this process that ended their call on purpose (all else is an interruption).
_left_on_purpose: set[str] = set()


def _leave(ctx: JobContext, reason: str) -> None:
    """End the job on purpose (the call is over, or it is not ours)."""
    _left_on_purpose.add(ctx.job.id)
    ctx.shutdown(reason=reason)


async def _on_session_end(ctx: JobContext) -> None:
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


@server.rtc_session(agent_name=settings.agent_name, on_request=_accept, on_session_end=_on_session_end)
async def entrypoint(ctx: JobContext) -> None:
    """Run one call in `ctx.room` until the caller leaves or the job is shut down."""
    ctx.log_context_fields = {"room": ctx.room.name}
    dispatch = DispatchInfo.parse(ctx.job.metadata)

    missing = settings.missing_model_credentials()
    if missing:
        await ctx.connect()
        logger.error("cannot answer the call: %s", missing)
        await _tell_caller(ctx, "This assistant is not configured yet: the operator must set its Gemini credentials.")
        _leave(ctx, missing)
        return

    # The operator's knowledge index and MCP servers, opened while the room is claimed.
    opening_tools = asyncio.create_task(operator_tools.open_for_call(settings))
    # 0. hold the room: one agent per room, even when a dispatch is repeated (records.py).
    call = await _hold_room(ctx)
    own_tools = await opening_tools
    ctx.add_shutdown_callback(own_tools.aclose)
    if call is False:
        _leave(ctx, "another agent serves this room")
        return
    earlier = await call.load_turns() if call is not None else []
    if call is not None:
        call.start(
            participant_identity=dispatch.participant_identity,
            participant_name=dispatch.participant_name,
            metadata=ctx.job.metadata,
        )

    phone_dispatch = telephony.PhoneDispatch.parse(ctx.job.metadata)  # None: a browser's call
    phone = telephony.PhoneCall(
        phone_dispatch, transfer_to=settings.sip_transfer_to, on_end=call.end if call else lambda _reason: None
    ) if phone_dispatch else None

    chat_ctx = llm.ChatContext()
    for turn in earlier:  # an earlier agent of this call died or was drained: pick it up
        chat_ctx.add_message(role=turn.role, content=turn.text)  # type: ignore[arg-type]
    assistant = Assistant(
        instructions=settings.instructions + own_tools.instructions,
        faq=Faq.load(settings.faq_path),
        chat_ctx=chat_ctx if earlier else None,
        phone=phone,
        greeting=settings.greeting,
    )
    model = build_realtime_model(settings)
    # Gemini Live does turn detection and barge-in server-side: no local VAD or STT (video: vision.py).
    session = AgentSession(llm=model, video_sampler=vision.only_through_vision)
    caller = {"identity": dispatch.participant_identity}
    counted = metrics.CallMetrics(
        "phone" if phone_dispatch else "web", settings.model_prices,
        on_usage=(lambda tokens, cost: call.write(budget.usage_writes(tokens, cost))) if call else None,
        on_ended=(lambda seconds: call.write(budget.call_writes(caller["identity"], seconds))) if call else None,
        on_response=call.record_response if call else None,
    )
    counted.attach(ctx, model, session)
    caller_here = asyncio.Event()
    link = CallLink(
        tell=lambda text: _tell_caller(ctx, text, caller_here),
        play_filler=lambda: _play_filler(session, counted),
        filler_after_s=settings.filler_after_s,
        filler_repeat_s=settings.filler_repeat_s,
        play_give_up=lambda: _play_give_up(session),
        on_event=(lambda name, fields: call.event("lifecycle", {"event": name, **fields})) if call else None,
    )
    model.add_listener(link)
    ctx.add_shutdown_callback(link.aclose)
    if call is not None:
        records.record_session(session, call)
    await own_tools.install(
        assistant, session, ready=assistant.greeting_done, tell=lambda text: _tell_caller(ctx, text, caller_here),
        play_filler=lambda: _play_filler(session, counted), record=call.event if call else None,
    )

    @session.on("close")
    def _on_close(event: CloseEvent) -> None:
        if event.reason == CloseReason.ERROR:
            # The model could not be reached (or was lost) and retrying stopped.
            asyncio.create_task(_end_call(ctx, call, link.gave_up_message(), reason="model unavailable"))

    # 1. start, as LiveKit's agent starter does: the session joins the room itself, while the
    # agent and its model connection start, so the two overlap. The caller is linked once the
    # room is joined (livekit-agents 1.8's RoomIO needs the room connected to link an identity).
    audio_input, audio_output, text_output = room_io_options(settings)
    await session.start(
        agent=assistant,
        room=ctx.room,
        room_options=room_io.RoomOptions(
            participant_kinds=[rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP],
            audio_input=audio_input,
            audio_output=audio_output,
            text_output=text_output,
            video_input=vision.enabled(settings.video_input),
            # A caller whose network drops may come back: `_watch_caller` decides when it is over.
            close_on_disconnect=False,
        ),
        record=False,
    )
    if dispatch.participant_identity:
        session.room_io.set_participant(dispatch.participant_identity)
    vision.attach(session, assistant, settings, call)  # the caller's camera / screen share, if allowed

    # 2. identify: the participant the token was issued to (or the first caller); an outbound
    # phone call may ring first.
    ring_s = phone.dispatch.ring_timeout_s if phone else 0.0
    try:
        participant = await asyncio.wait_for(
            ctx.wait_for_participant(identity=dispatch.participant_identity),
            timeout=settings.participant_timeout_s + ring_s,
        )
    except TimeoutError:
        logger.info("no caller joined within %.0f s; ending the job", settings.participant_timeout_s)
        if call is not None:
            call.end("no caller")
        _leave(ctx, "no participant joined")
        return
    ctx.log_context_fields = {"room": ctx.room.name, "participant": participant.identity}
    caller_here.set()
    caller["identity"] = participant.identity
    counted.call_started()
    guards.guard_call_length(ctx, session, call, settings.max_call_s, settings.max_call_warning_s)
    if call is not None:
        call.set_participant(participant.identity, participant.name or dispatch.participant_name)
    _watch_caller(ctx, call, participant.identity, left=phone.left_reason if phone else lambda: "caller left")
    if phone is not None:
        if call is not None:
            call.set_phone(direction=phone.dispatch.direction, **phone.describe(participant))
        try:
            await phone.start(ctx.room, session, participant)  # until answered
        except RuntimeError as exc:
            logger.info("the phone call ended before it was answered (%s)", exc)
            return  # `_watch_caller` ends the call

    # 3. the model link: retried with backoff while that makes sense (see resilience.py).
    ready_timeout = settings.model_retry_give_up_s + 2 * settings.model_connect_timeout_s
    if not await link.wait_ready(timeout=ready_timeout):
        if link.gave_up is None:  # neither connected nor failed for good: should not happen
            await _end_call(ctx, call, link.gave_up_message(), reason="model not ready")
        return  # the session's close handler tells the caller and ends the job

    # 4. personalise and greet (or pick up where an earlier agent of this call stopped).
    if earlier:
        logger.info("picking the call up from its record (%d earlier turns)", len(earlier))
        await assistant.resume(session)
    else:
        await assistant.greet(
            session, participant.name or dispatch.participant_name, instructions=phone.greeting() if phone else None
        )


async def _hold_room(ctx: JobContext) -> records.CallRecorder | None | Literal[False]:
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
                _leave(ctx, "room claimed by another job")
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


def _watch_caller(
    ctx: JobContext, call: records.CallRecorder | None, identity: str, left: Callable[[], str]
) -> None:
    """End the call when the caller hangs up, or has not come back within the return timeout.

    `left` says why, when the caller left on purpose ("caller left"; a phone call just
    transferred: "transferred to ...").
    """
    state: dict[str, asyncio.Task[None] | None] = {"timer": None}

    async def wait_for_return() -> None:
        await asyncio.sleep(settings.caller_return_timeout_s)
        logger.info("the caller did not come back within %.0f s; ending the call", settings.caller_return_timeout_s)
        if call is not None:
            call.end("caller did not return")
        _leave(ctx, "caller did not return")

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
            _leave(ctx, reason)
            return
        reason = _reason_name(participant.disconnect_reason)
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


def _reason_name(reason: int | None) -> str:
    """A LiveKit DisconnectReason as its name (CONNECTION_TIMEOUT, ...) for logs and records."""
    try:
        return rtc.DisconnectReason.Name(reason) if reason is not None else "UNKNOWN_REASON"  # type: ignore[arg-type]
    except ValueError:
        return str(reason)


async def _play_give_up(session: AgentSession) -> None:
    """Say the give-up clip and wait until it has played (at most its length + 2 s)."""
    try:
        handle = session.say(GIVE_UP_TEXT, audio=clip_frames(settings.give_up_wav), add_to_chat_ctx=False)
        rate, pcm = load_clip(settings.give_up_wav)
        await asyncio.wait_for(handle.wait_for_playout(), len(pcm) / 2 / rate + 2.0)
    except (RuntimeError, TimeoutError) as exc:  # the session is closing, or playout stalled
        logger.info("give-up clip not played to its end: %s", exc)


def _play_filler(session: AgentSession, counted: metrics.CallMetrics) -> None:
    """Say "One moment, please." with the pre-rendered clip (the model cannot speak now)."""
    try:
        session.say(FILLER_TEXT, audio=clip_frames(settings.filler_wav), add_to_chat_ctx=False)
    except RuntimeError as exc:  # the session is closing
        logger.debug("no filler: %s", exc)
        return
    counted.filler_played()


async def _end_call(ctx: JobContext, call: records.CallRecorder | None, message: str, *, reason: str) -> None:
    """Tell the caller why the call ends, then end the job (the worker keeps running)."""
    logger.error("ending the call: %s", reason)
    if call is not None:
        call.end(reason)
    try:
        await _tell_caller(ctx, message)
    except Exception as exc:  # the room may be gone already
        logger.warning("could not tell the caller: %s", exc)
    _leave(ctx, reason)
