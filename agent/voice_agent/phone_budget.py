"""Budgets for phone calls, which do not pass the token server.

A browser's call is refused by the token server (``503 budget_exhausted``) once today's or
this month's estimated model cost reaches its cap (`TOKEN_DAILY_BUDGET_USD`,
`TOKEN_MONTHLY_BUDGET_USD`; the totals are `voice_calls.budget`'s, which the agents add up).
An inbound phone call reaches the agent straight from livekit-sip's dispatch rule, so the
agent checks the same caps as the job starts: when one is reached, the caller hears why
(a pre-rendered clip: the model is not connected, so the call costs nothing), the room is
deleted (livekit-sip hangs up with a BYE), and the record's end reason is
``budget exhausted``. Outbound calls are checked by the token server before dialling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from livekit import api, rtc
from livekit.agents import JobContext
from redis.exceptions import RedisError
from voice_calls import budget
from voice_calls.records import call_key

from . import call_room, records
from .link import clip_frames
from .telephony import PhoneCall, PhoneDispatch

logger = logging.getLogger("voice_agent.phone_budget")

#: The call record's end reason.
END_REASON = "budget exhausted"
#: How long to wait for livekit-sip to subscribe to the clip's track before playing it, s.
SUBSCRIBED_WITHIN_S = 3.0


async def spent(
    call: records.CallRecorder, daily_usd: float, monthly_usd: float, now: float | None = None
) -> budget.Spent | None:
    """The cost cap a new call finds reached, or None: no cap set, none reached, Redis
    unreachable (the call is answered then), or the call is already in progress (its record
    has started: an earlier job served it, and live calls finish normally). Call it before
    `records.CallRecorder.start`."""
    if not daily_usd and not monthly_usd:
        return None
    now = time.time() if now is None else now
    redis = call.redis
    try:
        if await redis.hexists(call_key(call.room), "started_at"):  # not the room claim's fields
            return None
        day, month = await asyncio.gather(redis.hgetall(budget.day_key(now)), redis.hgetall(budget.month_key(now)))
    except RedisError as exc:
        logger.warning("cannot read the budget totals (%s); answering the call", exc)
        return None
    return budget.cost_cap_reached(day, month, daily_usd, monthly_usd, now)


async def refuse(
    ctx: JobContext, call: records.CallRecorder, dispatch: PhoneDispatch, reached: budget.Spent, wav: Path,
    *, wait_s: float,
) -> None:
    """Tell the phone caller the budget is spent (`wav`, 24 kHz mono PCM16), hang up, and
    close the record. Gives up quietly when no caller joins within `wait_s` seconds."""
    logger.warning("%s call budget (USD %g) is spent: the phone caller hears why and is hung up",
                   reached.period, reached.cap_usd)
    await ctx.connect()
    try:
        participant = await asyncio.wait_for(ctx.wait_for_participant(), timeout=wait_s)
    except TimeoutError:
        call.end("no caller")
        call_room.leave(ctx, "no participant joined")
        return
    call.set_participant(participant.identity, participant.name)
    call.set_phone(direction=dispatch.direction, **PhoneCall.describe(participant))
    call.end(END_REASON)
    try:
        await play_clip(ctx.room, wav)
    except Exception as exc:  # the caller hung up first, or the room is gone
        logger.info("budget message not played to its end: %s", exc)
    try:
        await ctx.api.room.delete_room(api.DeleteRoomRequest(room=ctx.room.name))
    except api.TwirpError as exc:
        logger.warning("could not hang up: %s", exc)
    call_room.leave(ctx, END_REASON)


async def play_clip(room: rtc.Room, wav: Path) -> None:
    """Publish a track, play `wav` on it in real time once someone has subscribed (or after
    `SUBSCRIBED_WITHIN_S`), and return when it has played."""
    frames = [frame async for frame in clip_frames(wav)]  # read once: the rate comes with them
    source = rtc.AudioSource(frames[0].sample_rate, 1)
    track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
    subscribed = asyncio.Event()
    room.on("local_track_subscribed", lambda _track: subscribed.set())
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    try:
        await asyncio.wait_for(subscribed.wait(), SUBSCRIBED_WITHIN_S)
    except TimeoutError:
        logger.info("nobody subscribed to the budget message within %.0f s; playing it anyway", SUBSCRIBED_WITHIN_S)
    for frame in frames:
        await source.capture_frame(frame)
    await source.wait_for_playout()
    await source.aclose()
