"""Cost guards over the real stack: a call that reaches AGENT_MAX_CALL_S is warned, hears a
goodbye and ends (the room is deleted, the record says why)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.caller import Caller
from tests.e2e.harness import ProcessStack
from tests.e2e.calls import greeted, wait_record
from tests.fixtures import stack_fixture
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e

MAX_CALL_S = 25
WARNING_S = 12


limited_stack = stack_fixture(
    "limited_stack", "limited", {"AGENT_MAX_CALL_S": str(MAX_CALL_S), "AGENT_MAX_CALL_WARNING_S": str(WARNING_S)},
    timeout_s=180,
)


async def test_a_call_at_its_time_limit_is_warned_then_ended(
    limited_stack: ProcessStack, standin: GeminiLiveStandin
) -> None:
    started = time.monotonic()
    async with Caller(limited_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        joined = caller.room.name

        def agent_said(text: str) -> bool:
            identity = caller.agent_identity()
            return identity is not None and any(text in t.text for t in caller.transcript_of(identity))

        # The stand-in answers an instruction turn with "You wrote: <instructions>".
        await caller.wait_until(lambda: agent_said("will end in about 12 seconds"), MAX_CALL_S + 30, "the warning")
        warned_at = time.monotonic()
        await caller.wait_until(lambda: agent_said("reached its time limit"), WARNING_S + 30, "the goodbye")
        await caller.wait_until(lambda: not caller.room.isconnected(), 30, "the call to end")
        ended_at = time.monotonic()
    assert WARNING_S - 4 < ended_at - warned_at < WARNING_S + 20, (warned_at, ended_at)
    # The agent writes the end after the room has closed: wait for it, do not race it.
    record = await wait_record(limited_stack, joined, lambda r: "end_reason" in r)
    assert record.get("end_reason") == "max call length", record
