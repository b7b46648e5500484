"""The web client in a real browser: headless Debian Chromium with a fake microphone.

The page is served by the native front door (Caddy), fetches its token from the token
server through it, and talks to the real livekit-server and agent worker; the model is
the Gemini Live stand-in. The fake microphone plays a WAV of real speech (espeak-ng).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.audio import synthesize, write_wav
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/lib/chromium/chromium"
FAKE_MIC_RATE = 48_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def speech_wav(path: Path, text: str, silence_s: float) -> Path:
    """A WAV for Chromium's fake microphone: the utterance, then silence (the file loops)."""
    import numpy as np

    speech = synthesize(text, FAKE_MIC_RATE)
    silence = np.zeros(int(silence_s * FAKE_MIC_RATE), dtype=np.int16)
    return write_wav(path, np.concatenate([silence[: FAKE_MIC_RATE * 3], speech, silence]), FAKE_MIC_RATE)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium whose microphone says one sentence about every 20 s."""
    wav = speech_wav(tmp_path_factory.mktemp("mic") / "mic.wav", "Hello there, what time is it?", 20.0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, native_stack: ProcessStack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(native_stack.web_url)
    yield page
    context.close()


def test_connect_hear_the_greeting_and_see_the_transcript(
    page: Page, standin: GeminiLiveStandin, artifacts: Path
) -> None:
    page.get_by_test_id("display-name").fill("Grace")
    page.get_by_test_id("connect").click()

    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator('[data-speaker="agent"]').first).to_contain_text("Hello", timeout=30_000)
    # The greeting was personalised with the display name typed in the page.
    assert any("Grace" in t.text for s in standin.sessions for t in s.turns if t.kind == "text")

    # The agent's audio reached the page's WebAudio graph.
    page.wait_for_function("() => window.__voiceClient.agentAudioLevel() > 0.01", timeout=20_000)

    # The fake microphone's speech went to the model and came back in the transcript.
    expect(transcript.locator('[data-speaker="user"]').first).to_contain_text("speech", timeout=30_000)
    expect(transcript.locator('[data-speaker="agent"]').nth(1)).to_contain_text("Europe/Paris", timeout=30_000)

    states = [s["state"] for s in page.evaluate("() => window.__voiceClient.stateHistory")]
    assert "listening" in states and "speaking" in states, states
    page.screenshot(path=str(artifacts / "web-call-desktop.png"), full_page=True)

    page.get_by_test_id("disconnect").click()
    page.wait_for_function("() => window.__voiceClient.state === 'disconnected'", timeout=10_000)
