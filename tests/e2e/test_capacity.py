"""No caller left alone in a silent room: when every agent is busy (or none is running), the
token endpoint refuses with ``503 at_capacity`` before any room exists, and the page counts
down and tries again by itself.

A stack of its own with one line (`AGENT_MAX_CALLS=1`): real livekit-server, Redis, token
server, agent worker, front door; callers are the LiveKit Python SDK and headless Chromium.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from livekit import api
from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import DESKTOP, launch, screenshot, speech_wav
from tests.e2e.caller import Caller, TokenRefused, request_token
from tests.e2e.harness import ProcessStack
from tests.fixtures import stack_fixture

pytestmark = pytest.mark.e2e

#: What the token server tells a refused caller to wait (s): short, so the tests are quick.
RETRY_AFTER_S = 3
#: How long a served caller may wait for its greeting (s): a job's process may have to start.
GREETING_TIMEOUT_S = 60


#: The native stack whose one agent worker takes one call at a time.
one_line = stack_fixture(
    "one_line", "capacity", {"AGENT_MAX_CALLS": "1", "TOKEN_BUSY_RETRY_AFTER_SECONDS": str(RETRY_AFTER_S)}
)


async def rooms(stack: ProcessStack) -> list[str]:
    """Rooms that exist in livekit-server right now."""
    lk = api.LiveKitAPI(stack.env["LIVEKIT_URL"], stack.env["LIVEKIT_API_KEY"], stack.env["LIVEKIT_API_SECRET"])
    try:
        return [room.name for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    finally:
        await lk.aclose()


async def heard_greeting(caller: Caller) -> None:
    await caller.wait_until(
        lambda: caller.agent_audio.first_audible_after(caller.joined_at), GREETING_TIMEOUT_S, "the greeting"
    )


async def test_a_call_beyond_capacity_is_refused_before_a_room_exists(one_line: ProcessStack) -> None:
    async with Caller(one_line.token_url, name="First") as first:
        await heard_greeting(first)
        status, body = await asyncio.to_thread(request_token, one_line.token_url, {"participant_name": "Second"})
        assert status == 503, body
        assert body["error"]["code"] == "at_capacity"
        assert "the only line is busy" in body["error"]["message"] and f"retry in {RETRY_AFTER_S} s" in body["error"]["message"]
        assert await rooms(one_line) == [first.token["room_name"]]
    # The line frees once the first call has ended; then the next caller is served.
    deadline = time.monotonic() + 20
    while True:
        status, body = await asyncio.to_thread(request_token, one_line.token_url, {"participant_name": "Second"})
        if status == 201:
            break
        assert status == 503 and time.monotonic() < deadline, body
        await asyncio.sleep(0.5)
    async with Caller(one_line.token_url, token=body) as second:
        await heard_greeting(second)


async def test_no_registered_worker_means_no_room(one_line: ProcessStack) -> None:
    one_line.stop("agent")
    try:
        deadline = time.monotonic() + 30  # the stopped worker's capacity expires (5 s) or says draining
        while True:
            status, body = await asyncio.to_thread(request_token, one_line.token_url, {})
            if status == 503:
                break
            assert time.monotonic() < deadline, f"still admitted without a worker: {status} {body}"
            await asyncio.sleep(0.5)
        assert body["error"]["code"] == "at_capacity"
        assert "no agent is available" in body["error"]["message"]
    finally:
        one_line.start(["agent"])
    # The restarted worker publishes its line again (no token is minted here: it would hold
    # the only line for the join window, and the next test needs it).
    import redis as sync_redis
    from voice_calls.admission import WORKERS, worker_key

    store = sync_redis.Redis.from_url(one_line.env["REDIS_URL"], decode_responses=True)
    deadline = time.monotonic() + 30
    while not any(store.exists(worker_key(w)) for w in store.smembers(WORKERS)):
        assert time.monotonic() < deadline, "the restarted worker never published its line"
        await asyncio.sleep(0.2)


def test_the_page_says_all_lines_are_busy_and_connects_once_one_frees(
    one_line: ProcessStack, artifacts: Path, tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    holder_ready = threading.Event()
    holder_done = asyncio.Event()

    async def hold_the_line() -> None:
        deadline = time.monotonic() + 30  # the line of the previous test's call may still be winding down
        while True:
            try:
                async with Caller(one_line.token_url, name="Holder") as holder:
                    await heard_greeting(holder)
                    holder_ready.set()
                    await holder_done.wait()
                return
            except TokenRefused as refused:
                if refused.code != "at_capacity" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    thread = threading.Thread(target=lambda: loop.run_until_complete(hold_the_line()), daemon=True)
    thread.start()
    deadline = time.monotonic() + GREETING_TIMEOUT_S + 10
    while not holder_ready.wait(0.1):
        assert thread.is_alive() and time.monotonic() < deadline, "the first caller was never served"

    wav = speech_wav(tmp_path / "quiet.wav", "Hello.", 10.0)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav)
        context = browser.new_context(viewport=DESKTOP, permissions=["microphone"])
        page = context.new_page()
        page.goto(one_line.web_url)
        page.get_by_test_id("connect").click()
        expect(page.get_by_test_id("agent-state")).to_have_text("All lines are busy", timeout=10_000)
        notice = page.get_by_test_id("notice")
        expect(notice).to_contain_text("All lines are busy. Trying again in")
        screenshot(page, artifacts, "desktop-all-lines-busy")
        # It counts down and asks again by itself: a second refusal, still no room for it.
        page.wait_for_function("() => window.__voiceClient.busyUntil > 0", timeout=5_000)
        first_until = page.evaluate("() => window.__voiceClient.busyUntil")
        page.wait_for_function(f"() => window.__voiceClient.busyUntil > {first_until}", timeout=3 * RETRY_AFTER_S * 1000)
        assert page.evaluate("() => window.__voiceClient.state") == "connecting"
        assert page.evaluate("() => window.__voiceClient.roomName") == ""

        # The line frees: the page gets in without anyone pressing anything, and is greeted.
        loop.call_soon_threadsafe(holder_done.set)
        thread.join(30)
        page.wait_for_function("() => window.__voiceClient.state === 'connected'", timeout=30_000)
        page.wait_for_function(
            "() => ['listening', 'idle', 'speaking'].includes(window.__voiceClient.agentState)", timeout=30_000
        )
        expect(page.get_by_test_id("notice")).to_be_hidden()
        page.evaluate("async () => { await window.__voiceClient.room?.disconnect(); }")
        context.close()
        browser.close()
