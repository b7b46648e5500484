"""The greeting guard: tools wait until the greeting has been spoken."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import ToolError

from voice_agent.assistant import Assistant
from voice_agent.settings import DEFAULT_FAQ_PATH
from voice_agent.tools import Faq


@pytest.fixture
def assistant() -> Assistant:
    return Assistant(instructions="Be brief.", faq=Faq.load(DEFAULT_FAQ_PATH))


async def test_tools_are_blocked_until_the_greeting_is_done(assistant: Assistant) -> None:
    time_call = asyncio.create_task(assistant.get_current_time(None, "UTC"))
    faq_call = asyncio.create_task(assistant.lookup_faq(None, "is my audio recorded?"))
    await asyncio.sleep(0.2)
    assert not time_call.done() and not faq_call.done()

    assistant.greeting_done.set()
    assert (await asyncio.wait_for(time_call, 1)).endswith("in UTC (UTC+00:00).")
    assert "recorded" in await asyncio.wait_for(faq_call, 1)


async def test_a_bad_time_zone_is_a_tool_error_the_model_can_read(assistant: Assistant) -> None:
    assistant.greeting_done.set()
    with pytest.raises(ToolError, match="unknown time zone 'Nowhere/City'"):
        await assistant.get_current_time(None, "Nowhere/City")
