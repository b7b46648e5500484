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
`resilience.py`; `link.py` decides what the caller hears and reads meanwhile; `call_room.py` holds
the room, watches the caller and ends the job.
"""

from __future__ import annotations

import asyncio
import json
import logging

from livekit import api, rtc
from livekit.agents import (
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
from voice_calls import budget, logs
from voice_calls.records import accepted_key

from . import call_room, guards, metrics, notices, operator_tools, phone_budget, records, telephony, vision
from .assistant import Assistant
from .capacity import CapacityPublisher
from .link import CallLink
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
        "assistant", "call_room", "capacity", "claims", "guards", "link", "metrics", "model", "model_faults", "notices",
        "operator_tools", "plugin_adapter", "records", "resilience", "telephony", "tools", "watchdog",
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


async def _log_end(reason: str) -> None:
    """The job's last line: the call (or this job's part of it) is over, and why."""
    logger.info("job ended: %s", reason, extra={logs.EVENT: logs.CALL_ENDED, "reason": reason})


@server.rtc_session(agent_name=settings.agent_name, on_request=_accept, on_session_end=call_room.on_session_end)
async def entrypoint(ctx: JobContext) -> None:
    """Run one call in `ctx.room` until the caller leaves or the job is shut down."""
    ctx.log_context_fields = logs.call_fields(room=ctx.room.name, job=ctx.job.id)
    logger.info("job started for the call", extra={logs.EVENT: logs.CALL_DISPATCHED})
    ctx.add_shutdown_callback(_log_end)
    dispatch = call_room.DispatchInfo.parse(ctx.job.metadata)

    missing = settings.missing_model_credentials()
    if missing:
        await ctx.connect()
        logger.error("cannot answer the call: %s", missing)
        try:  # a closing notice: the page ends the call and says why
            await notices.send(ctx.api, ctx.room.name, notices.NOT_CONFIGURED)
        except api.TwirpError as exc:
            logger.warning("could not end the call with a notice (%s); telling the caller only", exc)
            await call_room.tell_caller(ctx, notices.NOT_CONFIGURED.message)
        call_room.leave(ctx, missing)
        return

    # The operator's knowledge index and MCP servers, opened while the room is claimed.
    opening_tools = asyncio.create_task(operator_tools.open_for_call(settings))
    # 0. hold the room: one agent per room, even when a dispatch is repeated (records.py).
    call = await call_room.hold_room(ctx, settings, retention)
    own_tools = await opening_tools
    ctx.add_shutdown_callback(own_tools.aclose)
    if call is False:
        call_room.leave(ctx, "another agent serves this room")
        return
    earlier = await call.load_turns() if call is not None else []
    phone_dispatch = telephony.PhoneDispatch.parse(ctx.job.metadata)  # None: a browser's call
    over_budget = None  # web calls were checked by the token server, outbound ones before dialling
    if phone_dispatch is not None and phone_dispatch.direction == "inbound" and call is not None:
        over_budget = await phone_budget.spent(call, settings.daily_budget_usd, settings.monthly_budget_usd)
    if call is not None:
        call.start(
            participant_identity=dispatch.participant_identity,
            participant_name=dispatch.participant_name,
            metadata=ctx.job.metadata,
        )
    if over_budget is not None and phone_dispatch is not None and call is not None:
        # Before the model is connected: such a call costs nothing.
        await phone_budget.refuse(ctx, call, phone_dispatch, over_budget, settings.budget_spent_wav,
                                  wait_s=settings.participant_timeout_s)
        return
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
        tell=lambda text: call_room.tell_caller(ctx, text, caller_here),
        play_filler=lambda: call_room.play_filler(session, counted, settings.filler_wav),
        filler_after_s=settings.filler_after_s,
        filler_repeat_s=settings.filler_repeat_s,
        play_give_up=lambda: call_room.play_give_up(session, settings.give_up_wav),
        on_event=(lambda name, fields: call.event("lifecycle", {"event": name, **fields})) if call else None,
    )
    model.add_listener(link)
    ctx.add_shutdown_callback(link.aclose)
    if call is not None:
        records.record_session(session, call)
    await own_tools.install(
        assistant, session, ready=assistant.greeting_done, tell=lambda text: call_room.tell_caller(ctx, text, caller_here),
        play_filler=lambda: call_room.play_filler(session, counted, settings.filler_wav), record=call.event if call else None,
    )

    @session.on("close")
    def _on_close(event: CloseEvent) -> None:
        if event.reason == CloseReason.ERROR:
            # The model could not be reached (or was lost) and retrying stopped.
            asyncio.create_task(call_room.end_call(ctx, call, link.gave_up_message(), reason="model unavailable"))

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
            # A caller whose network drops may come back: `call_room.watch_caller` decides when it is over.
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
        call_room.leave(ctx, "no participant joined")
        return
    ctx.log_context_fields.update(logs.call_fields(
        participant=participant.identity, call=phone.describe(participant)["sip_call_id"] if phone else None))
    caller_here.set()
    caller["identity"] = participant.identity
    counted.call_started()
    guards.guard_call_length(ctx, session, call, settings.max_call_s, settings.max_call_warning_s)
    if call is not None:
        call.set_participant(participant.identity, participant.name or dispatch.participant_name)
    call_room.watch_caller(ctx, call, participant.identity, left=phone.left_reason if phone else lambda: "caller left",
                           return_timeout_s=settings.caller_return_timeout_s)
    if phone is not None:
        if call is not None:
            call.set_phone(direction=phone.dispatch.direction, **phone.describe(participant))
        try:
            await phone.start(ctx.room, session, participant)  # until answered
        except RuntimeError as exc:
            logger.info("the phone call ended before it was answered (%s)", exc)
            return  # `call_room.watch_caller` ends the call

    # 3. the model link: retried with backoff while that makes sense (see resilience.py).
    ready_timeout = settings.model_retry_give_up_s + 2 * settings.model_connect_timeout_s
    if not await link.wait_ready(timeout=ready_timeout):
        if link.gave_up is None:  # neither connected nor failed for good: should not happen
            await call_room.end_call(ctx, call, link.gave_up_message(), reason="model not ready")
        return  # the session's close handler tells the caller and ends the job

    # 4. personalise and greet (or pick up where an earlier agent of this call stopped).
    if earlier:
        logger.info("picking the call up from its record (%d earlier turns)", len(earlier))
        await assistant.resume(session)
    else:
        await assistant.greet(
            session, participant.name or dispatch.participant_name, instructions=phone.greeting() if phone else None
        )


