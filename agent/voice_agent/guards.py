"""Cost guards of one call: its maximum length.

A call may last `AGENT_MAX_CALL_S` seconds from the moment the caller joined. The model says
so `AGENT_MAX_CALL_WARNING_S` seconds before the end (a reply generated from `WARNING`), then,
at the limit, says goodbye (`GOODBYE`) and the call ends: the room is deleted, which hangs up
a phone line too. The caller hears both; the call record's end reason is `END_REASON`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("voice_agent.guards")

END_REASON = "max call length"
WARNING = ("This call has a time limit of {minutes} and will end in about {left}. Tell the caller so in one "
           "short, friendly sentence, then go on helping.")
GOODBYE = "The call has reached its time limit. Say a short, friendly goodbye in one sentence."
#: The goodbye may take this long to play before the call ends anyway (s).
GOODBYE_PLAYOUT_S = 15.0


def _duration(seconds: float) -> str:
    """`90` -> "1.5 minutes", `60` -> "one minute", `30` -> "30 seconds" (for the model's instructions)."""
    if seconds < 60:
        return f"{seconds:.0f} seconds"
    if seconds == 60:
        return "one minute"
    return f"{seconds / 60:g} minutes"


async def limit_call_length(
    session: Any,
    max_call_s: float,
    warning_s: float,
    end: Callable[[str], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Warn, say goodbye and end the call at its time limit; run from the moment the caller
    joined, as a task the call cancels if it ends first.

    Args:
        session: the call's AgentSession (`generate_reply(instructions=...)` speaks).
        max_call_s: the call's length limit (s).
        warning_s: how long before the limit the caller is told (s); 0: no warning.
        end: ends the call, given the reason (`END_REASON`).
    """
    started = clock()
    warn_at = max_call_s - warning_s
    if warning_s > 0 and warn_at > 0:
        await asyncio.sleep(warn_at)
        logger.info("the call ends in %.0f s (AGENT_MAX_CALL_S=%.0f): telling the caller", warning_s, max_call_s)
        _reply(session, WARNING.format(minutes=_duration(max_call_s), left=_duration(warning_s)))
    await asyncio.sleep(max(0.0, started + max_call_s - clock()))
    logger.info("the call reached AGENT_MAX_CALL_S=%.0f: saying goodbye and ending it", max_call_s)
    handle = _reply(session, GOODBYE)
    if handle is not None:
        try:
            await asyncio.wait_for(handle.wait_for_playout(), GOODBYE_PLAYOUT_S)
        except TimeoutError:
            logger.warning("the goodbye did not finish within %.0f s; ending the call", GOODBYE_PLAYOUT_S)
    await end(END_REASON)


def _reply(session: Any, instructions: str) -> Any:
    """`session.generate_reply`, or None when the session is closing."""
    try:
        return session.generate_reply(instructions=instructions)
    except RuntimeError as exc:
        logger.debug("no reply: %s", exc)
        return None


def guard_call_length(ctx: Any, session: Any, recorder: Any, max_call_s: float, warning_s: float) -> None:
    """Start `limit_call_length` for the call of job `ctx` (cancelled when the job shuts down
    first); at the limit the call's record ends with `END_REASON` and the room is deleted.

    Args:
        ctx: the JobContext; recorder: the call's `records.CallRecorder`, or None.
        max_call_s: the limit (s); 0 or less: no limit.
    """
    if max_call_s <= 0:
        return

    async def end(reason: str) -> None:
        if recorder is not None:
            recorder.end(reason)
        try:
            await ctx.delete_room()  # every participant leaves: the browser's call ends, a phone hangs up
        except Exception as exc:  # noqa: BLE001 - the room may be gone already; the job ends anyway
            logger.warning("could not delete the room: %s", exc)
        ctx.shutdown(reason=reason)

    task = asyncio.get_running_loop().create_task(limit_call_length(session, max_call_s, warning_s, end),
                                                  name="call-length")

    async def cancel(_reason: str) -> None:
        task.cancel()

    ctx.add_shutdown_callback(cancel)
