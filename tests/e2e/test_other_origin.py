"""A third-party front end on another origin: livekit-client's own ``TokenSource.endpoint`` in
headless Chromium, asking the appliance for a token the way LiveKit's agent-starter-react
does (its agent's name, an ``X-Sandbox-Id`` header), then a whole call with the agent.

The page (`pages/token_source_endpoint.html`, with livekit-client's UMD build from web/) is
served on ``http://localhost:<port>``; the appliance is a second token server with
``TOKEN_CORS_ORIGINS`` naming that origin, behind a second native front door on
``http://127.0.0.1:<port>``, sharing the session stack's Redis, livekit-server and agent.
The browser's CORS preflight is real, and so is its refusal: the session stack's own front
door lists no origin, and the same page gets nothing from it.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from scripts import stack
from tests.e2e.browser import DESKTOP, launch, screenshot, speech_wav
from tests.e2e.harness import ProcessStack, more_processes
from tests.ports import free_port
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PAGE = Path(__file__).parent / "pages" / "token_source_endpoint.html"
LIVEKIT_CLIENT_UMD = stack.ROOT / "web" / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page and livekit-client, served on ``http://localhost:<port>`` (another origin than
    the front doors' ``http://127.0.0.1:<port>``, and a secure context for the microphone)."""
    root = tmp_path_factory.mktemp("other-origin")
    shutil.copy(PAGE, root / "index.html")
    shutil.copy(LIVEKIT_CLIENT_UMD, root / LIVEKIT_CLIENT_UMD.name)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def appliance(native_stack: ProcessStack, page_origin: str) -> Iterator[ProcessStack]:
    """A token server that lists `page_origin` in `TOKEN_CORS_ORIGINS`, and a front door to it."""
    overrides = {"TOKEN_SERVER_PORT": str(free_port()), "WEB_PORT": str(free_port()),
                 "TOKEN_CORS_ORIGINS": page_origin}
    with more_processes(native_stack, ["token-server", "web"], overrides, native_stack.log_dir / "other-origin") as door:
        yield door


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose microphone asks a question 3 s after it opens."""
    wav = speech_wav(tmp_path_factory.mktemp("mic") / "question.wav", "Hello there, what time is it?", 20.0)
    with sync_playwright() as playwright:
        chromium = launch(playwright, wav)
        yield chromium
        chromium.close()


def open_call(browser: Browser, page_origin: str, token_url: str, agent_name: str) -> Page:
    context = browser.new_context(viewport=DESKTOP, permissions=["microphone"])
    page = context.new_page()
    page.goto(f"{page_origin}/?{urlencode({'endpoint': token_url, 'agent': agent_name})}")
    return page


def hang_up(page: Page) -> None:
    page.evaluate("async () => { await window.__call.room?.disconnect(); }")
    page.context.close()


def test_token_source_endpoint_on_another_origin_gets_a_call_with_the_agent(
    browser: Browser, page_origin: str, appliance: ProcessStack, standin: GeminiLiveStandin, artifacts: Path
) -> None:
    started = time.monotonic()
    page = open_call(browser, page_origin, appliance.token_url, appliance.env["AGENT_NAME"])
    try:
        # The token came (preflight answered, room_config naming our agent accepted), the room
        # was joined, and the agent the token dispatched joined it and is listening.
        page.wait_for_function("() => window.__call.roomName || window.__call.error", timeout=30_000)
        assert page.evaluate("() => window.__call.error") == ""
        assert page.evaluate("() => window.__call.roomName").startswith("room-")
        page.wait_for_function(
            "() => ['listening', 'speaking'].some((s) => window.__call.agentStates.includes(s))", timeout=45_000
        )
        assert page.evaluate("() => window.__call.agentIdentity").startswith("agent-")
        # Its greeting came back as audio and as a transcript.
        page.wait_for_function("() => window.__call.agentAudio && window.__call.agentText.length > 0",
                               timeout=30_000)

        # The page's microphone reached the model through the SFU and the agent.
        def heard(sessions: list[SessionRecord]) -> bool:
            return any(s.connected_at >= started and any(t.kind == "audio" for t in s.turns) for s in sessions)

        standin.wait_for(heard, timeout=60)
        screenshot(page, artifacts, "other-origin-token-source-in-call")
    finally:
        hang_up(page)


def test_an_origin_not_listed_gets_no_token(
    browser: Browser, page_origin: str, native_stack: ProcessStack
) -> None:
    """The session stack's front door lists no origin: the browser keeps its answer from the page."""
    page = open_call(browser, page_origin, native_stack.token_url, native_stack.env["AGENT_NAME"])
    try:
        page.wait_for_function("() => window.__call.error", timeout=30_000)
        assert page.evaluate("() => window.__call.roomName") == ""
        assert "fetch" in page.evaluate("() => window.__call.error").lower()
    finally:
        hang_up(page)
