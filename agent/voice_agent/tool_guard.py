"""What every knowledge and MCP tool call of a call goes through.

* **The greeting guard**: a call waits until the greeting has been spoken, so the first
  thing a caller hears is never a tool's answer (as the built-in tools in `assistant.py`).
* **The filler**: a tool still running after `filler_after_s` makes the agent say "One
  moment, please." (the pre-rendered clip), so the caller is not left in silence.
  livekit-agents marks the model's turn done before it waits for the tools, so the clip
  plays at once, and the model's answer waits until it has played.
* **A time limit**: a tool that does not answer within its timeout is cancelled (an MCP
  request is cancelled with ``notifications/cancelled`` by the MCP SDK).
* **Errors the model can read**: a timeout or failure becomes a `ToolError`, which the
  model gets as the call's error result (it then apologises, as the instructions ask);
  nothing hangs, nothing is raised into the session.

Each event (filler played, timeout, failure) goes to `on_event`: the call record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from livekit.agents import ToolError

logger = logging.getLogger("voice_agent.tools")

T = TypeVar("T")

#: What the model is told to do with a failed tool, after the reason.
APOLOGY_HINT = "Apologise to the caller briefly and offer to help in another way."


class ToolGuard:
    """Runs tool calls for one call.

    Args:
        ready: set once the greeting has played (`Assistant.greeting_done`).
        play_filler: plays the filler clip (the agent's own audio).
        filler_after_s: a call still running this long gets the filler, seconds.
        on_event: optional `(name, fields)` sink for the call record
            (`tool_filler_played`, `tool_timeout`, `tool_failed`).
    """

    def __init__(
        self,
        *,
        ready: asyncio.Event,
        play_filler: Callable[[], None],
        filler_after_s: float,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._ready = ready
        self._play_filler = play_filler
        self._filler_after_s = filler_after_s
        self._on_event = on_event or (lambda _name, _fields: None)

    async def run(self, name: str, call: Callable[[], Awaitable[T]], *, timeout_s: float) -> T:
        """Run one tool call: after the greeting, with the filler when slow, within `timeout_s`.

        Args:
            name: the tool's name, for the log, the record and the model's error message.
            call: starts the work (called once, after the greeting).
            timeout_s: the call is cancelled after this long, seconds (the wait for the
                greeting does not count).

        Returns:
            What `call` returned.

        Raises:
            ToolError: the tool raised one, timed out or failed; the message is for the model.
        """
        await self._ready.wait()
        started = time.monotonic()
        filler = asyncio.get_running_loop().call_later(self._filler_after_s, self._filler, name)
        try:
            return await asyncio.wait_for(call(), timeout_s)
        except ToolError:
            raise
        except TimeoutError as exc:
            logger.warning("tool %s did not answer within %.1f s; the model gets an error", name, timeout_s)
            self._on_event("tool_timeout", {"tool": name, "timeout_s": timeout_s})
            raise ToolError(f"{name} did not answer within {timeout_s:g} seconds. {APOLOGY_HINT}") from exc
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
            logger.warning("tool %s failed after %.2f s: %s", name, time.monotonic() - started, reason)
            self._on_event("tool_failed", {"tool": name, "reason": reason})
            raise ToolError(f"{name} is unavailable right now. {APOLOGY_HINT}") from exc
        finally:
            filler.cancel()

    def _filler(self, name: str) -> None:
        logger.info("tool %s still running after %.1f s: playing the filler", name, self._filler_after_s)
        self._on_event("tool_filler_played", {"tool": name})
        self._play_filler()
