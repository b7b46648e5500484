"""Vision over real connections: a caller's camera reaches the model as paced, bounded JPEGs.

A stack with `VIDEO_INPUT=camera`. The Python caller (LiveKit SDK, WebRTC, VP8) publishes a
solid-colour camera at 30 fps through the real livekit-server; the agent worker forwards it to
the Gemini Live stand-in, which decodes every JPEG it receives and describes the last one in
its next reply. The page, in Chromium with a fake camera of a known colour, shows the camera
button only then, and what it shows reaches the model. (`VIDEO_INPUT=off`, the default: the
camera is refused in test_security.py, and the page shows no button in test_web.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc
from playwright.sync_api import Browser, expect, sync_playwright

from tests.audio import synthesize
from tests.e2e.browser import DESKTOP, PHONE, launch, screenshot, solid_y4m, speech_wav
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack, running_stack
from tests.e2e.test_call import read_call_record, session_for
from tests.e2e.test_web import model_session, wait_session
from scripts.proc_usage import UsageSampler, trees
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord, VideoFrameRecord

pytestmark = pytest.mark.e2e

#: The stack's vision settings: a rate and a size the defaults (1 frame/s, 1024 px) would hide.
MAX_FPS = 2.0
MAX_PX = 320
CAMERA_SIZE = (640, 480)
CAMERA_FPS = 30.0
RED = (200, 30, 30)
BLUE = (30, 30, 200)


@pytest.fixture(scope="module")
def vision_stack(
    standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[ProcessStack]:
    """The native stack with callers allowed to show their camera (not their screen)."""
    extra = {"VIDEO_INPUT": "camera", "VIDEO_INPUT_MAX_FPS": str(MAX_FPS), "VIDEO_INPUT_MAX_PX": str(MAX_PX)}
    with running_stack(
        standin.base_url, str(standin.ca_file), tmp_path_factory.mktemp("vision-state"),
        log_dir / "vision", extra=extra,
    ) as processes:
        yield processes


def current(standin: GeminiLiveStandin, session_id: str) -> SessionRecord:
    return next(s for s in standin.sessions if s.session_id == session_id)


def agent_usage(stack_: ProcessStack) -> UsageSampler:
    """Samples the CPU of the agent's whole process tree (supervisord, worker, call processes)."""
    return UsageSampler({"agent": trees(lambda: stack_.processes["agent"].pid)}, interval_s=0.5)


def frames_of(standin: GeminiLiveStandin, session_id: str) -> list[VideoFrameRecord]:
    return current(standin, session_id).video_frames


def notes_of(session: SessionRecord) -> list[str]:
    """Texts of the context notes (client_content turns) the model got."""
    return [
        part.text or ""
        for m in session.messages_of("client_content")
        if m.message and m.message.client_content
        for turn in m.message.client_content.turns or []
        for part in turn.parts or []
    ]


async def test_a_camera_reaches_the_model_paced_bounded_and_seen(
    vision_stack: ProcessStack, standin: GeminiLiveStandin
) -> None:
    started = time.monotonic()
    async with Caller(vision_stack.token_url, name="Ada") as caller:
        # The token allows exactly the microphone and the camera, and the answer says so.
        assert caller.token["publish_sources"] == ["microphone", "camera"]
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 30, "the greeting's audio")
        session = session_for(standin, started)
        assert current(standin, session.session_id).video_frames == []

        camera = await caller.publish_video(RED, size=CAMERA_SIZE, fps=CAMERA_FPS)
        # Polled without blocking the loop: the camera and the microphone run on it.
        await caller.wait_until(lambda: len(frames_of(standin, session.session_id)) >= 2, 20, "frames at the model")
        usage = agent_usage(vision_stack)
        usage.start()
        await asyncio.sleep(6.0)
        camera_cpu = usage.stop()["agent"].cpu_percent
        frames = current(standin, session.session_id).video_frames
        # JPEG, scaled to MAX_PX on the longest side, the camera's colour.
        assert {(f.mime_type, f.format, f.width, f.height) for f in frames} == {
            ("image/jpeg", "JPEG", MAX_PX, MAX_PX * CAMERA_SIZE[1] // CAMERA_SIZE[0])
        }
        assert {f.colour_name for f in frames} == {"red"}
        # At MAX_FPS, not the camera's 30 fps.
        rate = (len(frames) - 1) / (frames[-1].at - frames[0].at)
        print(f"\nframes at the model: {len(frames)}, {rate:.2f} frames/s (cap {MAX_FPS}); "
              f"camera sent {camera.frames_sent} at {CAMERA_FPS:.0f} fps; "
              f"JPEG {min(f.size for f in frames)}-{max(f.size for f in frames)} bytes")
        assert MAX_FPS * 0.75 <= rate <= MAX_FPS * 1.05, rate
        # (Their spacing as sent is checked in agent/tests/test_vision.py: here the agent's loop
        # and the WebSocket may deliver two or three at once.)
        assert any("turned on their camera" in n for n in notes_of(current(standin, session.session_id)))

        # The model saw what the caller showed: its reply to a question says so.
        await caller.say(synthesize("What do you see?", MIC_SAMPLE_RATE))
        agent = caller.agent_identity() or ""
        await caller.wait_until(
            lambda: any(f"I see a red picture, {MAX_PX} by" in t.text for t in caller.transcript_of(agent)),
            30, "the reply describing the camera",
        )

        # Muted: nothing more goes to the model, and it is told.
        assert camera.publication is not None and camera.publication.track is not None
        camera.publication.track.mute()
        await caller.wait_until(
            lambda: any("stopped showing video" in n for n in notes_of(current(standin, session.session_id))),
            10, "the note that video stopped",
        )
        muted_at = len(current(standin, session.session_id).video_frames)
        usage.start()
        await asyncio.sleep(6.0)
        muted_cpu = usage.stop()["agent"].cpu_percent
        assert len(current(standin, session.session_id).video_frames) == muted_at
        print(f"agent CPU (whole worker tree), % of one core: camera on {camera_cpu:.0f}, muted {muted_cpu:.0f}")

        # Unmuted: frames come again.
        camera.publication.track.unmute()
        await caller.wait_until(lambda: len(frames_of(standin, session.session_id)) > muted_at + 1, 15, "frames again")

        # A screen share is not what VIDEO_INPUT=camera allows: livekit-server refuses it.
        with pytest.raises(Exception):  # noqa: B017 - PublishTrackError or a timeout
            await caller.publish_video((30, 30, 200), source=rtc.TrackSource.SOURCE_SCREENSHARE, size=(320, 240))
        room = str(caller.token["room_name"])
        sent = len(current(standin, session.session_id).video_frames)

    assert current(standin, session.session_id).errors == []
    # The call record counts the frames and the image tokens.
    deadline = time.monotonic() + 15
    while True:
        record = await asyncio.to_thread(read_call_record, vision_stack, room)
        if not record["open"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert sent <= record["video_frames"] <= sent + 1, (record["video_frames"], sent)
    assert record["usage"]["input_image_tokens"] > 0
    events = [e["event"] for e in record["events"]]
    assert "video_started" in events and "video_stopped" in events


# --- the page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose fake camera shows solid blue at 30 fps and whose microphone asks a question."""
    folder = tmp_path_factory.mktemp("camera")
    wav = speech_wav(folder / "speech.wav", "What can you see?", 20.0)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav, camera=solid_y4m(folder / "blue.y4m", BLUE, CAMERA_SIZE, int(CAMERA_FPS)))
        yield browser
        browser.close()


def test_the_page_shows_the_camera_to_the_model_and_stops(
    camera_browser: Browser, vision_stack: ProcessStack, standin: GeminiLiveStandin, artifacts: Path
) -> None:
    context = camera_browser.new_context(viewport=DESKTOP, permissions=["microphone", "camera"])
    try:
        page = context.new_page()
        page.goto(vision_stack.web_url)
        started = time.monotonic()
        page.get_by_test_id("connect").click()
        page.wait_for_function("() => ['listening', 'idle'].includes(window.__voiceClient.agentState)", timeout=30_000)
        session_id = model_session(standin, started)

        # VIDEO_INPUT=camera: a camera button, no screen-share button, nothing shown yet.
        camera = page.get_by_test_id("camera")
        expect(camera).to_be_visible()
        expect(page.get_by_test_id("screen-share")).to_be_hidden()
        expect(page.get_by_test_id("video-preview")).to_be_hidden()

        camera.click()
        expect(page.get_by_test_id("seeing")).to_have_text("The agent can see your camera", timeout=15_000)
        expect(camera).to_have_attribute("aria-pressed", "true")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=preview]').videoWidth > 0", timeout=10_000
        )
        frames = wait_session(standin, session_id, lambda s: len(s.video_frames) >= 4, 20).video_frames
        assert {f.colour_name for f in frames} == {"blue"}, [f.mean_rgb for f in frames]
        assert max(f.width for f in frames) <= MAX_PX
        screenshot(page, artifacts, "desktop-camera-on")
        page.set_viewport_size(PHONE)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, artifacts, "phone-camera-on")
        page.set_viewport_size(DESKTOP)

        # The fake microphone's question gets an answer naming the colour the camera shows.
        expect(page.get_by_test_id("transcript").locator('[data-speaker="agent"]', has_text="I see a blue picture")
               ).to_be_visible(timeout=45_000)

        # Stopped: the indicator goes, and frames stop reaching the model.
        camera.click()
        expect(page.get_by_test_id("seeing")).to_be_hidden(timeout=10_000)
        expect(page.get_by_test_id("video-preview")).to_be_hidden()
        time.sleep(1.5)  # frames already on the way
        count = len(next(s for s in standin.sessions if s.session_id == session_id).video_frames)
        time.sleep(3.0)
        assert len(next(s for s in standin.sessions if s.session_id == session_id).video_frames) == count
        page.evaluate("async () => { await window.__voiceClient.room?.disconnect(); }")
    finally:
        context.close()
