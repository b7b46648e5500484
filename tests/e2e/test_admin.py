"""The operator console (/admin) in Chromium over the real stack: a refused key is said so;
with the operators' key a live call shows with its agent's state; after it, the call opens
with its transcript (each reply's response time), tool calls and events, and the charts
(response time per turn, calls per hour, cost per day) hold its figures. Screenshots
(desktop, phone) go to `artifacts/screenshots/`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.audio import synthesize
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, screenshot
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.calls import UTTERANCE, greeted
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SOME = re.compile(r"^[1-9]")  # a chart's data-points: at least one


class LiveCall:
    """A call by "Ada" with one spoken turn (the stand-in makes a tool call), held open until
    `hang_up` is set; `answered` is set (and `room` known) once the answer was heard."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.hang_up = threading.Event()
        self.room = ""

    async def run(self, stack: ProcessStack, standin: GeminiLiveStandin) -> None:
        started = time.monotonic()
        async with Caller(stack.token_url, name="Ada") as caller:
            await greeted(caller, standin, started)
            spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
            await caller.wait_until(lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None,
                                    60, "an answer")
            await asyncio.sleep(2)  # the answer's transcript reaches the record
            self.room = caller.room.name
            self.answered.set()
            await asyncio.to_thread(self.hang_up.wait, 120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_console(page: Page, stack: ProcessStack, key: str) -> None:
    page.goto(f"{stack.web_url.rstrip('/')}/admin")
    expect(page.get_by_test_id("key-form")).to_be_visible()
    page.fill("#key", key)
    page.click("button[type=submit]")


def test_the_console_shows_calls_charts_and_a_calls_transcript(
    native_stack: ProcessStack, standin: GeminiLiveStandin, browser: Browser, artifacts: Path
) -> None:
    key = native_stack.env["RECORDS_API_KEYS"].split(",")[0]
    call = LiveCall()
    # Playwright's sync API runs an event loop in this thread: the call runs in another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        done = pool.submit(asyncio.run, call.run(native_stack, standin))
        try:
            assert call.answered.wait(240) or done.result(timeout=1), "the call was not answered"
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            open_console(page, native_stack, key)
            live = page.locator(f"[data-testid=live-calls] tr[data-room='{call.room}']")
            expect(live).to_contain_text("Ada")
            expect(live).to_contain_text(re.compile(r"listening|thinking|speaking"))
            expect(page.get_by_test_id("tile-live")).not_to_have_text("0")
            screenshot(page, artifacts, "admin-desktop-live")
            context.close()
        finally:
            call.hang_up.set()
        done.result(timeout=60)

    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        phone = viewport is PHONE
        context = browser.new_context(viewport=viewport, is_mobile=phone, device_scale_factor=2 if phone else 1)
        page = context.new_page()
        open_console(page, native_stack, "not-the-operators-key-" + "x" * 20)
        expect(page.get_by_test_id("key-error")).to_be_visible()
        expect(page.get_by_test_id("key-error")).not_to_have_text("")
        screenshot(page, artifacts, f"admin-{name}-refused")

        page.fill("#key", key)
        page.click("button[type=submit]")
        row = page.locator(f"[data-testid=calls] tr[data-room='{call.room}']")
        expect(row).to_contain_text("Ada")
        expect(row).to_contain_text("caller left")
        # The charts hold this call's figures: its turn, its hour, today's cost.
        expect(page.get_by_test_id("chart-response")).to_have_attribute("data-points", SOME)
        expect(page.get_by_test_id("chart-calls")).to_have_attribute("data-points", SOME)
        expect(page.get_by_test_id("chart-cost")).to_have_attribute("data-points", SOME)
        expect(page.get_by_test_id("tile-response")).to_have_text(re.compile(r"^\d+\.\d\d s$"))
        expect(page.get_by_test_id("tile-cost-day")).not_to_have_text("$0.00")
        expect(page.get_by_test_id("usage")).to_contain_text("Input audio")
        row.click()
        detail = page.get_by_test_id("detail")
        expect(detail).to_contain_text(call.room)
        turns = page.get_by_test_id("detail-turns")
        expect(turns).to_contain_text("Caller")
        expect(turns).to_contain_text("Agent")
        expect(turns).to_contain_text(re.compile(r"replied in \d+\.\d\d s"))
        expect(page.get_by_test_id("detail-tools")).to_contain_text("get_current_time")
        expect(page.get_by_test_id("detail-events")).to_contain_text("call_ended")
        page.wait_for_timeout(300)  # the smooth scroll to the call settles
        screenshot(page, artifacts, f"admin-{name}")
        context.close()
