"""The operator console (/admin) in Chromium over the real stack: a refused key is said so,
the operators' key shows the calls, and a call opens with its transcript, tool calls and
events. Screenshots (desktop, phone) go to `artifacts/screenshots/`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.audio import synthesize
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, screenshot
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack
from tests.e2e.test_faults import UTTERANCE, greeted
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def one_call(stack: ProcessStack, standin: GeminiLiveStandin) -> str:
    """A call by "Ada" with one spoken turn (the stand-in makes a tool call); its room."""
    started = time.monotonic()
    async with Caller(stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
        await caller.wait_until(lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, 60,
                                "an answer")
        await asyncio.sleep(2)  # the answer's transcript reaches the record
        return caller.room.name


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_the_console_shows_calls_and_a_calls_transcript(
    native_stack: ProcessStack, standin: GeminiLiveStandin, browser: Browser, artifacts: Path
) -> None:
    # Playwright's sync API runs an event loop in this thread: the call runs in another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        room = pool.submit(asyncio.run, one_call(native_stack, standin)).result(timeout=240)
    key = native_stack.env["RECORDS_API_KEYS"].split(",")[0]
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE, device_scale_factor=2
                                      if viewport is PHONE else 1)
        page = context.new_page()
        page.goto(f"{native_stack.web_url.rstrip('/')}/admin")
        expect(page.get_by_test_id("key-form")).to_be_visible()
        page.fill("#key", "not-the-operators-key-" + "x" * 20)
        page.click("button[type=submit]")
        expect(page.get_by_test_id("key-error")).to_be_visible()
        expect(page.get_by_test_id("key-error")).not_to_have_text("")
        screenshot(page, artifacts, f"admin-{name}-refused")

        page.fill("#key", key)
        page.click("button[type=submit]")
        row = page.locator(f"[data-testid=calls] tr[data-room='{room}']")
        expect(row).to_contain_text("Ada")
        expect(row).to_contain_text("caller left")
        row.click()
        detail = page.get_by_test_id("detail")
        expect(detail).to_contain_text(room)
        expect(page.get_by_test_id("detail-turns")).to_contain_text("Caller")
        expect(page.get_by_test_id("detail-turns")).to_contain_text("Agent")
        expect(page.get_by_test_id("detail-tools")).to_contain_text("get_current_time")
        expect(page.get_by_test_id("detail-events")).to_contain_text("call_ended")
        screenshot(page, artifacts, f"admin-{name}")
        context.close()
