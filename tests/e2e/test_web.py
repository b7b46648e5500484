"""The web client in a real browser: headless Debian Chromium with a fake microphone.

The page is served by the native front door (Caddy), fetches its token from the token
server through it, and talks to the real livekit-server and agent worker; the model is
the Gemini Live stand-in, which records what reached it. Each fake microphone is a WAV of
real speech (espeak-ng) that Chromium loops; one browser per WAV, one context per test.

Chromium runs without `--use-fake-ui-for-media-stream`: each context is granted the
microphone permission explicitly, so a context without it is a user who said no.
Screenshots (desktop 1280x800, phone 390x844) go to `artifacts/screenshots/`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.audio import rms_dbfs, synthesize, write_wav
from tests.e2e.browser import DESKTOP, FAKE_MIC_RATE, PHONE, launch, screenshot, speech_wav
from tests.e2e.calls import ExtraWorker, job_pid, worker_stopped
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

#: The chatty microphone's cycle: speech starts every CHATTY_CYCLE_S seconds.
CHATTY_LEAD_S, CHATTY_GAP_S = 0.5, 3.0
#: The stand-in's VAD calls a 20 ms frame speech at -40 dBFS; muted audio must stay well below.
MUTED_MAX_DBFS = -50.0

#: Makes getUserMedia fail as on a machine without any microphone.
NO_MICROPHONE_SCRIPT = """
(() => {
  const md = navigator.mediaDevices;
  const enumerate = md.enumerateDevices.bind(md);
  md.getUserMedia = async () => { throw new DOMException('Requested device not found', 'NotFoundError'); };
  md.enumerateDevices = async () => (await enumerate()).filter((d) => d.kind !== 'audioinput');
})();
"""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def speech_browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A microphone that asks one question 3 s after it opens, then about every 22 s."""
    wav = speech_wav(tmp_path_factory.mktemp("mic") / "speech.wav", "Hello there, what time is it?", 20.0)
    browser = launch(playwright, wav)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def chatty_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A microphone that speaks every few seconds: (WAV, cycle length in s)."""
    wav = speech_wav(
        tmp_path_factory.mktemp("mic") / "chatty.wav", "Testing, one two three.", CHATTY_GAP_S, CHATTY_LEAD_S
    )
    cycle_s = len(synthesize("Testing, one two three.", FAKE_MIC_RATE)) / FAKE_MIC_RATE + CHATTY_LEAD_S + CHATTY_GAP_S
    return wav, cycle_s


@pytest.fixture(scope="module")
def chatty_browser(playwright: Playwright, chatty_wav: tuple[Path, float]) -> Iterator[Browser]:
    browser = launch(playwright, chatty_wav[0])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def silent_browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A microphone that is open but only ever sends digital silence."""
    path = tmp_path_factory.mktemp("mic") / "silence.wav"
    browser = launch(playwright, write_wav(path, np.zeros(FAKE_MIC_RATE * 5, dtype=np.int16), FAKE_MIC_RATE))
    yield browser
    browser.close()


@pytest.fixture
def open_page(native_stack: ProcessStack) -> Iterator[Callable[..., Page]]:
    """Opens the client in a fresh browser context; ends its call and closes it after the test."""
    contexts: list[BrowserContext] = []

    def open_(
        browser: Browser, *, viewport: dict[str, int] = DESKTOP, microphone: bool = True, init_script: str = ""
    ) -> Page:
        phone = viewport["width"] < 600
        context = browser.new_context(
            viewport=viewport,
            permissions=["microphone"] if microphone else [],
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=2 if phone else 1,
        )
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.goto(native_stack.web_url)
        expect(page.get_by_test_id("agent-state")).to_have_text("Not connected")
        return page

    yield open_
    for context in contexts:
        for page in context.pages:
            try:  # leave the room properly, so the agent's job ends now rather than on a timeout
                page.evaluate("async () => { await window.__voiceClient.room?.disconnect(); }")
            except Exception:  # noqa: BLE001 - the page may be gone already
                pass
        context.close()


def connect(page: Page, name: str = "") -> float:
    """Presses Connect; returns the monotonic time just before (to find the stand-in session)."""
    if name:
        page.get_by_test_id("display-name").fill(name)
    started = time.monotonic()
    page.get_by_test_id("connect").click()
    return started


def model_session(standin: GeminiLiveStandin, started: float) -> str:
    """The id of the stand-in session the agent opened for a call that started at `started`."""

    def fresh(sessions: list[SessionRecord]) -> list[SessionRecord]:
        return [s for s in sessions if s.connected_at >= started and s.setup is not None]

    return fresh(standin.wait_for(fresh, timeout=30))[0].session_id


def wait_session(
    standin: GeminiLiveStandin, session_id: str, predicate: Callable[[SessionRecord], object], timeout: float
) -> SessionRecord:
    """Waits until `predicate` holds for one stand-in session; returns a copy of it."""

    def holds(sessions: list[SessionRecord]) -> bool:
        return any(s.session_id == session_id and predicate(s) for s in sessions)

    return next(s for s in standin.wait_for(holds, timeout=timeout) if s.session_id == session_id)


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    rest = iter(seen)
    return all(item in rest for item in wanted)


def agent_states(page: Page) -> list[str]:
    return [s["state"] for s in page.evaluate("() => window.__voiceClient.stateHistory")]


def wait_agent_ready(page: Page, timeout_ms: float = 30_000) -> None:
    page.wait_for_function(
        "() => ['listening', 'idle'].includes(window.__voiceClient.agentState)", timeout=timeout_ms
    )


# --- a spoken conversation ---------------------------------------------------------------


def test_speech_in_both_sides_in_the_transcript_and_agent_audio_heard(
    speech_browser: Browser, open_page: Callable[..., Page], standin: GeminiLiveStandin, artifacts: Path
) -> None:
    page = open_page(speech_browser)
    screenshot(page, artifacts, "desktop-before-call")
    started = connect(page, name="Grace")
    transcript = page.get_by_test_id("transcript")
    agent_entries = transcript.locator('[data-speaker="agent"]')

    # The agent greets first, by the name typed in the page.
    expect(agent_entries.first).to_contain_text("Hello", timeout=30_000)
    session_id = model_session(standin, started)
    greeting = wait_session(standin, session_id, lambda s: s.turns, 10).turns[0]
    assert greeting.kind == "text" and "Grace" in greeting.text

    # The agent's audio reaches the page's WebAudio graph.
    page.wait_for_function("() => window.__voiceClient.agentAudioLevel() > 0.01", timeout=20_000)

    # The fake microphone's question reached the model as speech ...
    record = wait_session(standin, session_id, lambda s: any(t.kind == "audio" for t in s.turns), 40)
    heard = next(t for t in record.turns if t.kind == "audio")
    # ... the model's transcript of it is shown as the user's, final ...
    user_entry = transcript.locator('[data-speaker="user"][data-kind="speech"]').first
    expect(user_entry.locator(".text")).to_have_text(heard.text, timeout=15_000)
    expect(user_entry).to_have_attribute("data-final", "true")
    # ... and the answer (a tool call on the way) streams in as the agent's.
    expect(agent_entries.nth(1)).to_contain_text("Europe/Paris", timeout=30_000)
    expect(agent_entries.nth(1)).to_have_attribute("data-final", "true", timeout=30_000)

    # The agent's states, in order: joined, greeted, listened, thought (tool), answered, listens.
    page.wait_for_function(
        "() => window.__voiceClient.agentState === 'listening'"
        " && window.__voiceClient.stateHistory.filter((s) => s.state === 'speaking').length >= 2",
        timeout=30_000,
    )
    states = agent_states(page)
    assert states[0] == "connecting", states
    # The agent joins starting up, or already listening (its session starts while it joins).
    assert states[1] in ("initializing", "listening"), states
    expected = ["connecting", "speaking", "listening", "thinking", "speaking", "listening"]
    assert is_subsequence(expected, states), states
    expect(page.get_by_test_id("agent-state")).to_have_text("Listening")
    # VIDEO_INPUT is off (the default): no camera or screen-share button, no preview.
    for testid in ("camera", "screen-share", "video-preview"):
        expect(page.get_by_test_id(testid)).to_be_hidden()
    assert page.evaluate("() => window.__voiceClient.video.allowed") == {"camera": False, "screen": False}

    # The turn's response time is shown, unobtrusively.
    latency = page.get_by_test_id("latency")
    expect(latency).to_contain_text("Response time")
    assert int(latency.get_attribute("data-count") or 0) >= 1

    # The microphone spoke, so no "sending silence" notice, even after its long silences.
    expect(page.get_by_test_id("notice")).to_be_hidden()
    assert page.evaluate("() => window.__voiceClient.notice") == ""
    screenshot(page, artifacts, "desktop-in-call")

    page.get_by_test_id("disconnect").click()
    page.wait_for_function("() => window.__voiceClient.state === 'disconnected'", timeout=10_000)
    expect(page.get_by_test_id("notice")).to_contain_text("Disconnected")
    expect(page.get_by_test_id("connect")).to_be_enabled()


def test_phone_sized_screen(
    speech_browser: Browser, open_page: Callable[..., Page], artifacts: Path
) -> None:
    page = open_page(speech_browser, viewport=PHONE)
    screenshot(page, artifacts, "phone-before-call")
    connect(page)
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator('[data-speaker="user"]').first).to_contain_text("speech", timeout=40_000)
    answer = transcript.locator('[data-speaker="agent"]').nth(1)
    expect(answer).to_contain_text("Europe/Paris", timeout=30_000)
    expect(answer).to_have_attribute("data-final", "true", timeout=30_000)
    # Everything fits the width: nothing to scroll sideways, the controls are reachable.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for testid in ("mute", "disconnect", "chat-input", "chat-send"):
        box = page.get_by_test_id(testid).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], testid
    screenshot(page, artifacts, "phone-in-call")


# --- mute --------------------------------------------------------------------------------


def test_mute_keeps_speech_from_the_model_and_unmute_lets_it_through(
    chatty_browser: Browser,
    chatty_wav: tuple[Path, float],
    open_page: Callable[..., Page],
    standin: GeminiLiveStandin,
) -> None:
    _, cycle_s = chatty_wav
    page = open_page(chatty_browser)
    session_id = model_session(standin, connect(page))
    mute = page.get_by_test_id("mute")

    # Unmuted, the microphone's speech reaches the model.
    wait_session(standin, session_id, lambda s: any(e.kind == "start" for e in s.vad_events), 30)

    expect(mute).to_be_enabled()
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(mute).to_have_attribute("data-mic", "muted")
    expect(mute).to_have_text("Unmute")
    muted_at = time.monotonic()
    # Muted for longer than the microphone's cycle: it spoke at least once meanwhile.
    time.sleep(cycle_s + 2.5)
    unmuted_at = time.monotonic()
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "false")
    expect(mute).to_have_attribute("data-mic", "on")

    # Unmuted again, speech gets through again.
    record = wait_session(
        standin, session_id, lambda s: any(e.kind == "start" and e.at > unmuted_at for e in s.vad_events), 20
    )

    # While muted (after 1 s for audio already on its way), the model heard nothing.
    window = (muted_at + 1.0, unmuted_at)
    starts = [e for e in record.vad_events if e.kind == "start" and window[0] <= e.at <= window[1]]
    assert not starts, f"speech reached the model while muted: {starts}"
    audio = b"".join(
        bytes(record.input_audio[c.offset : c.offset + c.size])
        for c in record.audio_chunks
        if window[0] <= c.at <= window[1]
    )
    # The agent keeps streaming the (silent) muted track to the model: the level below is measured.
    assert len(audio) >= (window[1] - window[0]) / 2 * 32_000, f"only {len(audio)} bytes while muted"
    frames = [audio[i : i + 640] for i in range(0, len(audio) - 639, 640)]  # 20 ms at 16 kHz
    loudest = max((rms_dbfs(f) for f in frames), default=-120.0)
    assert loudest < MUTED_MAX_DBFS, f"muted input reached {loudest:.1f} dBFS"


# --- typing instead of speaking ----------------------------------------------------------


def test_typed_message_reaches_the_model_and_the_reply_shows(
    silent_browser: Browser, open_page: Callable[..., Page], standin: GeminiLiveStandin
) -> None:
    message = "Please spell my name: Ada Lovelace"
    page = open_page(silent_browser)
    session_id = model_session(standin, connect(page))
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator('[data-speaker="agent"]').first).to_contain_text("Hello", timeout=30_000)

    # Keyboard only: the chat field has the focus once connected; Enter sends.
    chat = page.get_by_test_id("chat-input")
    expect(chat).to_be_focused()
    page.keyboard.type(message)
    page.keyboard.press("Enter")
    expect(chat).to_have_value("")
    expect(transcript.locator('[data-speaker="user"][data-kind="chat"] .text')).to_have_text(message)

    record = wait_session(standin, session_id, lambda s: any(message in t.text for t in s.turns), 20)
    turn = next(t for t in record.turns if message in t.text)
    assert turn.kind == "text" and ("user", message) in turn.contents

    reply = transcript.locator('[data-speaker="agent"]').filter(has_text=f"You wrote: {message}")
    expect(reply).to_have_count(1, timeout=20_000)
    expect(reply).to_have_attribute("data-final", "true", timeout=20_000)


def test_a_microphone_that_sends_only_silence_is_pointed_out(
    silent_browser: Browser, open_page: Callable[..., Page]
) -> None:
    page = open_page(silent_browser)
    connect(page)
    page.wait_for_function("() => window.__voiceClient.state === 'connected'", timeout=20_000)
    expect(page.get_by_test_id("mute")).to_have_attribute("data-mic", "on", timeout=10_000)
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("Your microphone is sending silence", timeout=15_000)
    # Muting is the user's choice, not a broken microphone: the notice goes away.
    page.get_by_test_id("mute").click()
    expect(notice).to_be_hidden()


# --- microphone problems -----------------------------------------------------------------


def test_microphone_permission_denied(
    silent_browser: Browser, open_page: Callable[..., Page], artifacts: Path
) -> None:
    page = open_page(silent_browser, microphone=False)
    connect(page)
    error = page.get_by_test_id("error")
    expect(error).to_have_attribute("data-error-code", "mic-permission-denied", timeout=20_000)
    expect(error).to_contain_text("Microphone blocked")
    expect(page.get_by_test_id("error-message")).to_have_text(
        "The browser did not allow this page to use the microphone."
    )
    expect(error).to_contain_text("Allow microphone access")
    mute = page.get_by_test_id("mute")
    expect(mute).to_have_attribute("data-mic", "unavailable")
    expect(mute).to_have_text("Retry mic")
    # The call goes on without the microphone: the agent greets and typing works.
    expect(page.get_by_test_id("transcript").locator('[data-speaker="agent"]').first).to_contain_text(
        "Hello", timeout=30_000
    )
    expect(page.get_by_test_id("chat-input")).to_be_enabled()
    screenshot(page, artifacts, "desktop-mic-denied")


def test_no_microphone(silent_browser: Browser, open_page: Callable[..., Page], artifacts: Path) -> None:
    page = open_page(silent_browser, viewport=PHONE, init_script=NO_MICROPHONE_SCRIPT)
    connect(page)
    error = page.get_by_test_id("error")
    expect(error).to_have_attribute("data-error-code", "mic-not-found", timeout=20_000)
    expect(error).to_contain_text("No microphone found")
    expect(page.get_by_test_id("error-message")).to_have_text("This device has no microphone the browser can use.")
    expect(page.get_by_test_id("mute")).to_have_text("Retry mic")
    page.wait_for_function("() => window.__voiceClient.state === 'connected'", timeout=20_000)
    expect(page.get_by_test_id("chat-input")).to_be_enabled()
    screenshot(page, artifacts, "phone-no-microphone")


# --- the media server restarts mid-call (last: it disturbs the whole stack) -------------


def test_livekit_restart_mid_call_shows_the_banner_and_the_call_recovers(
    silent_browser: Browser,
    open_page: Callable[..., Page],
    native_stack: ProcessStack,
    standin: GeminiLiveStandin,
    artifacts: Path,
) -> None:
    page = open_page(silent_browser)
    started = connect(page)
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator('[data-speaker="agent"]').first).to_contain_text("Hello", timeout=30_000)
    wait_agent_ready(page)

    # livekit-server drains on SIGTERM until its participants leave, which they don't
    # during a call: it is killed after 3 s, then started again on the same ports.
    restart = threading.Thread(target=native_stack.restart, args=("livekit",), kwargs={"stop_timeout_s": 3})
    restart.start()
    try:
        banner = page.get_by_test_id("banner")
        expect(banner).to_be_visible(timeout=20_000)
        expect(banner).to_have_text("Connection lost. Reconnecting\u2026")
        expect(page.get_by_test_id("connection-quality")).to_have_attribute("data-quality", "lost")
        expect(page.get_by_test_id("state-hint")).to_have_text("Waiting for the connection to come back\u2026")
        screenshot(page, artifacts, "desktop-reconnecting")
    finally:
        restart.join()

    # The client rejoins the new server by itself, the agent comes back, and the
    # conversation goes on in the same page.
    expect(banner).to_be_hidden(timeout=45_000)
    page.wait_for_function("() => window.__voiceClient.state === 'connected'", timeout=10_000)
    history = [s["state"] for s in page.evaluate("() => window.__voiceClient.connectionHistory")]
    assert history == ["connecting", "connected", "reconnecting", "connected"], history
    wait_agent_ready(page)
    assert "disconnected" not in agent_states(page), agent_states(page)
    expect(page.get_by_test_id("error")).to_be_hidden()

    # The conversation goes on: a typed message reaches the model and the reply shows.
    # The agent reconnects on its own and only receives data again 1-2 s after it
    # reappears in the room (messages typed in that window are lost on its side), so
    # ask until one gets through, which must happen soon.
    recovered_at = time.monotonic()
    chat = page.get_by_test_id("chat-input")
    received = None
    for attempt in range(1, 8):
        message = f"Are you still there? ({attempt})"
        chat.fill(message)
        chat.press("Enter")
        try:
            standin.wait_for(
                lambda sessions, m=message: any(
                    s.connected_at >= started and any(m in t.text for t in s.turns) for s in sessions
                ),
                timeout=1.5,
            )
        except TimeoutError:
            continue
        received = message
        break
    assert received, "no typed message reached the model after the restart"
    assert time.monotonic() - recovered_at < 12
    reply = transcript.locator('[data-speaker="agent"]').filter(has_text=f"You wrote: {received}")
    expect(reply).to_have_count(1, timeout=20_000)


def test_no_worker_the_page_says_so_within_5_s_and_the_call_ends(
    silent_browser: Browser, open_page: Callable[..., Page], native_stack: ProcessStack, artifacts: Path
) -> None:
    # No worker registered (a restart or a crash loop), yet admitted: a dead worker's line
    # still counts for a few seconds (with none, the page would say all lines are busy).
    with worker_stopped(native_stack, ghost_lines=1):
        page = open_page(silent_browser)
        connect(page)
        notice = page.get_by_test_id("transcript").locator('[data-kind="notice"]')
        expect(notice).to_contain_text("no assistant is available", timeout=15_000)
        expect(page.get_by_test_id("error")).to_have_attribute("data-error-code", "call-ended")
        expect(page.get_by_test_id("error-message")).to_contain_text("no assistant is available")
        page.wait_for_function("() => window.__voiceClient.state === 'disconnected'", timeout=10_000)
        expect(page.get_by_test_id("connect")).to_be_enabled()
        screenshot(page, artifacts, "desktop-no-agent-available")
        joined_at = next(s["at"] for s in page.evaluate("() => window.__voiceClient.connectionHistory")
                         if s["state"] == "connected")
        told_at = next(e["receivedAt"] for e in page.evaluate("() => window.__voiceClient.transcript")
                       if e["kind"] == "notice")
        assert told_at - joined_at < 5_000, f"told {told_at - joined_at} ms after joining"
        assert page.evaluate("() => window.__voiceClient.serverNotice")["code"] == "no_agent_available"


def test_a_lost_agent_shows_reconnecting_the_assistant_and_the_call_goes_on(
    silent_browser: Browser, open_page: Callable[..., Page], native_stack: ProcessStack, artifacts: Path,
    tmp_path: Path,
) -> None:
    second = ExtraWorker(native_stack, tmp_path / "second-worker.log")
    second.start()
    try:
        page = open_page(silent_browser)
        connect(page)
        wait_agent_ready(page)
        room = page.evaluate("() => window.__voiceClient.roomName")
        serving = second.log if room in second.log.read_text(errors="replace") else native_stack.log_dir / "agent.log"
        os.killpg(os.getpgid(job_pid(serving, room)), signal.SIGKILL)  # the worker serving the call

        # "Reconnecting the assistant…" may show for less than a poll of the page when another
        # worker takes the call at once: read the client's state history, not the label now.
        page.wait_for_function(
            "() => window.__voiceClient.stateHistory.some(s => s.state === 'reconnecting')", timeout=15_000
        )
        expect(page.get_by_test_id("error")).to_be_hidden()
        notice = page.get_by_test_id("transcript").locator('[data-kind="notice"]')
        expect(notice).to_contain_text("reconnecting you to the assistant", timeout=15_000)
        screenshot(page, artifacts, "desktop-reconnecting-the-assistant")
        wait_agent_ready(page, timeout_ms=60_000)  # another worker's agent takes the call
        expect(page.get_by_test_id("error")).to_be_hidden()
        states = agent_states(page)
        assert "reconnecting" in states and "disconnected" not in states, states
        # Hang up before a worker stops: a call still going would be handed over again (and
        # its new agent's model session would be mistaken for the next test's).
        page.get_by_test_id("disconnect").click()
        page.wait_for_function("() => window.__voiceClient.state === 'disconnected'", timeout=10_000)
    finally:
        second.stop()
        native_stack.wait_healthy(["agent"], timeout_s=180)
