"""Function calls the stand-in makes: what to call (:class:`ToolCallSpec`), issuing a call,
matching the client's answers, and cancelling calls a barge-in overtook.

Frame shapes (google-genai ``LiveServerToolCall`` / ``LiveClientToolResponse`` /
``LiveServerToolCallCancellation``): ``{"toolCall": {"functionCalls": [{"id", "name", "args"}]}}``
out, ``{"tool_response": {"functionResponses": [{"id", "name", "response"}]}}`` back,
``{"toolCallCancellation": {"ids": [...]}}`` when the answer is no longer wanted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from google.genai import types

from .outbox import Outbox
from .records import ToolCallRecord, ToolResponseRecord, TurnRecord


@dataclass(frozen=True)
class ToolCallSpec:
    """A function call the stand-in makes on every audio user turn.

    The call is only made in sessions whose setup declared a function called
    ``name``. Frame shapes (google-genai ``LiveServerToolCall`` /
    ``LiveClientToolResponse``): the server sends
    ``{"toolCall": {"functionCalls": [{"id", "name", "args"}]}}`` and waits for
    ``{"tool_response": {"functionResponses": [{"id", "name", "response"}]}}``.

    Attributes:
        name: function name, as declared in ``setup.tools[].functionDeclarations``.
        args: JSON-serialisable arguments sent in the call.
        response_timeout_s: seconds to wait for the matching response before the
            call is recorded as an error and the reply goes ahead without it.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    response_timeout_s: float = 10.0



def tool_output_text(response: dict[str, Any] | None) -> str:
    """A function response as reply text: its ``output`` field, else its JSON."""
    if not response:
        return ""
    output = response.get("output")
    if isinstance(output, str):
        return output
    return json.dumps(response if output is None else output, ensure_ascii=False)


class ToolCalls:
    """The function calls of one session, on the stand-in's event loop.

    Args:
        out: the session's connection and record.
    """

    def __init__(self, out: Outbox) -> None:
        self._out = out
        self._waiters: dict[str, asyncio.Future[types.FunctionResponse]] = {}
        self._ids = itertools.count(1)

    async def call(self, turn: TurnRecord, spec: ToolCallSpec, ids: list[str]) -> tuple[str | None, str | None]:
        """Call ``spec`` for ``turn`` and wait for the answer.

        The call's id is appended to ``ids`` as soon as it is issued (the reply keeps them
        to cancel on barge-in).

        Returns:
            ``(output, None)`` with the answer as text (:func:`tool_output_text`), or
            ``(None, error)`` when none came within ``spec.response_timeout_s`` seconds.
        """
        rec = self._out.record
        call_id = f"function-call-{rec.session_id}-{next(self._ids)}"
        waiter: asyncio.Future[types.FunctionResponse] = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = waiter
        ids.append(call_id)
        call = ToolCallRecord(call_id, spec.name, dict(spec.args), turn.index, time.monotonic())
        with self._out.mutate():
            turn.tool_call_id = call_id
            rec.tool_calls.append(call)
        await self._out.send(
            types.LiveServerMessage(
                tool_call=types.LiveServerToolCall(
                    function_calls=[types.FunctionCall(id=call_id, name=spec.name, args=dict(spec.args))]
                )
            )
        )
        try:
            response = await asyncio.wait_for(asyncio.shield(waiter), spec.response_timeout_s)
        except TimeoutError:
            error = f"no tool response for {call_id} within {spec.response_timeout_s} s"
            with self._out.mutate():
                call.error = error
            self._out.error(error)
            return None, error
        finally:
            self._waiters.pop(call_id, None)
        return tool_output_text(response.response), None

    def answer(self, response: types.LiveClientToolResponse, at: float) -> None:
        """A client ``tool_response`` arrived at ``at``: record it and wake the calls it answers."""
        rec = self._out.record
        for fr in response.function_responses or []:
            waiter = self._waiters.get(fr.id or "")
            matched = waiter is not None and not waiter.done()
            with self._out.mutate():
                rec.tool_responses.append(ToolResponseRecord(at, fr.id, fr.name, fr.response, matched))
                if matched:
                    call = next(c for c in rec.tool_calls if c.id == fr.id)
                    call.response, call.response_name, call.responded_at = fr.response, fr.name, at
            if matched:
                assert waiter is not None
                waiter.set_result(fr)
            else:
                self._out.error(f"tool response with id {fr.id!r} (name {fr.name!r}) answers no pending call")

    def pending(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` still waiting for their answer."""
        return [i for i in ids if i in self._waiters and not self._waiters[i].done()]

    async def cancel(self, ids: list[str]) -> None:
        """Mark the calls ``ids`` cancelled and send ``toolCallCancellation`` (nothing if empty)."""
        if not ids:
            return
        with self._out.mutate():
            for call in self._out.record.tool_calls:
                if call.id in ids:
                    call.cancelled = True
        await self._out.send(
            types.LiveServerMessage(tool_call_cancellation=types.LiveServerToolCallCancellation(ids=ids))
        )
