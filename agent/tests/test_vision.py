"""Vision: which caller frames go to the model, how often, how large, and what it is told."""

from __future__ import annotations

import io as stdlib_io
from collections.abc import Callable

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.utils import images
from livekit.agents.voice import io
from PIL import Image

from voice_agent import vision
from voice_agent.settings import AgentSettings

CAMERA = rtc.TrackSource.SOURCE_CAMERA
SCREEN = rtc.TrackSource.SOURCE_SCREENSHARE


def solid_i420(width: int, height: int, rgb: tuple[int, int, int]) -> rtc.VideoFrame:
    """A solid-colour frame in I420, the format LiveKit decodes video into."""
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[:, :] = (*rgb, 255)
    return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()).convert(rtc.VideoBufferType.I420)


class Camera(io.VideoInput):
    """A source at `fps`: each frame advances the shared clock by 1/fps s; `script(t)` runs before
    each frame, to change the track's state as the call goes."""

    def __init__(
        self, clock: list[float], frames: int, fps: float = 30.0, script: Callable[[float], None] = lambda _t: None
    ) -> None:
        super().__init__(label="test")
        self.clock, self.left, self.fps, self.script = clock, frames, fps, script
        self.start, self.sent = clock[0], 0

    async def __anext__(self) -> rtc.VideoFrame:
        if self.left == 0:
            raise StopAsyncIteration
        self.left -= 1
        self.sent += 1
        self.clock[0] = self.start + self.sent / self.fps  # no drift from adding up 1/fps
        self.script(self.clock[0])
        return solid_i420(64, 48, (200, 20, 30))


def gated(source: io.VideoInput, clock: list[float], track: list[vision.TrackState | None], **kwargs: object):
    seen: list[str | None] = []
    sent: list[tuple[float, str]] = []
    options = {"allowed": vision.SOURCES["both"], "max_fps": 1.0, "max_px": 1024, **kwargs}
    gate = vision.VisionInput(
        source,
        track=lambda: track[0],
        on_frame=lambda name: sent.append((clock[0], name)),
        on_seeing=seen.append,
        clock=lambda: clock[0],
        **options,  # type: ignore[arg-type]
    )
    return gate, sent, seen


async def drain(gate: vision.VisionInput) -> list[rtc.VideoFrame]:
    return [frame async for frame in gate]


def test_sizes_are_bounded_on_the_longest_side_and_never_grow() -> None:
    assert vision.bounded_size(1920, 1080, 1024) == (1024, 576)
    assert vision.bounded_size(1080, 1920, 1024) == (576, 1024)
    assert vision.bounded_size(640, 480, 1024) == (640, 480)
    assert vision.bounded_size(1024, 1024, 1024) == (1024, 1024)
    assert vision.bounded_size(4000, 10, 100) == (100, 1)


def test_a_large_frame_is_scaled_down_and_a_small_one_left_alone() -> None:
    big = solid_i420(1280, 720, (20, 40, 220))
    small = vision.scale_down(big, 512)
    assert (small.width, small.height) == (512, 288)
    pixels = np.frombuffer(bytes(small.data), np.uint8).reshape(288, 512, 4)
    assert np.allclose(pixels[..., :3].mean(axis=(0, 1)), (20, 40, 220), atol=4)
    little = solid_i420(320, 240, (20, 40, 220))
    assert vision.scale_down(little, 512) is little


def test_the_jpeg_sent_to_the_model_keeps_the_frame_size() -> None:
    """The plugin's own default would blow a 640x480 camera up to 1024x768."""
    jpeg = images.encode(solid_i420(640, 480, (0, 200, 0)), vision.JPEG_OPTIONS)
    assert Image.open(stdlib_io.BytesIO(jpeg)).size == (640, 480)


async def test_a_30_fps_camera_is_paced_to_the_configured_rate() -> None:
    clock = [0.0]
    track = [vision.TrackState(CAMERA, muted=False)]
    gate, sent, seen = gated(Camera(clock, frames=300), clock, track, max_fps=2.0)
    frames = await drain(gate)
    assert len(frames) == len(sent) == 20  # 10 s of camera at 2 frames/s
    gaps = np.diff([at for at, _ in sent])
    assert gaps.min() >= 0.5 - 1 / 30 and abs(gaps.mean() - 0.5) < 0.01
    assert gate.frames == {"camera": 20} and gate.dropped == 280
    assert seen == ["camera"]


async def test_frames_of_a_muted_track_never_go_on() -> None:
    clock = [0.0]
    track: list[vision.TrackState | None] = [vision.TrackState(CAMERA, muted=True)]
    gate, sent, seen = gated(Camera(clock, frames=90), clock, track)
    assert await drain(gate) == []
    assert sent == [] and seen == []

    # Unmuted after 1.5 s, muted again after 4.2 s: frames go on in between only, 1 a second.
    def script(t: float) -> None:
        track[0] = vision.TrackState(CAMERA, muted=not 1.5 <= t < 4.2)

    clock = [0.0]
    gate, sent, seen = gated(Camera(clock, frames=180, script=script), clock, track)
    frames = await drain(gate)
    assert [round(at, 2) for at, _ in sent] == [1.5, 2.5, 3.5] and len(frames) == 3
    assert seen == ["camera", None]


async def test_a_source_video_input_does_not_allow_is_dropped() -> None:
    clock = [0.0]
    track = [vision.TrackState(SCREEN, muted=False)]
    gate, sent, _ = gated(Camera(clock, frames=60), clock, track, allowed=vision.SOURCES["camera"])
    assert await drain(gate) == [] and sent == []


async def test_the_model_is_told_when_the_source_changes_and_when_video_stops() -> None:
    clock = [0.0]
    track: list[vision.TrackState | None] = [None]

    def script(t: float) -> None:  # camera, then a screen share published over it
        track[0] = vision.TrackState(CAMERA if t < 2.0 else SCREEN, muted=False)

    gate, sent, seen = gated(Camera(clock, frames=120, script=script), clock, track)
    await drain(gate)
    assert [name for _, name in sent] == ["camera", "camera", "screen_share", "screen_share"]
    assert seen == ["camera", "screen_share"]
    assert gate.frames == {"camera": 2, "screen_share": 2}
    # The screen share ends and nothing else is published: the model is told at once, once.
    track[0] = None
    gate.track_changed()
    gate.track_changed()
    assert seen == ["camera", "screen_share", None]
    assert len({vision.NOTES["camera"], vision.NOTES["screen_share"], vision.NOTES[None]}) == 3


def test_settings_defaults_keep_cost_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"LIVEKIT_URL": "ws://x", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s",
                        "AGENT_NAME": "a"}.items():
        monkeypatch.setenv(name, value)
    settings = AgentSettings()
    assert (settings.video_input, settings.video_input_max_fps, settings.video_input_max_px) == ("off", 1.0, 1024)
    assert not vision.enabled(settings.video_input)
    monkeypatch.setenv("VIDEO_INPUT", "screen")
    monkeypatch.setenv("VIDEO_INPUT_MAX_FPS", "0.5")
    settings = AgentSettings()
    assert vision.enabled(settings.video_input) and settings.video_input_max_fps == 0.5
    assert vision.SOURCES[settings.video_input] == {SCREEN}
    monkeypatch.setenv("VIDEO_INPUT", "microphone")
    with pytest.raises(ValueError):
        AgentSettings()


async def test_a_late_frame_does_not_bring_a_burst() -> None:
    """Frames that arrive in clumps (a busy loop) still go on no closer than half an interval."""
    times = iter([0.0, 1.9, 1.95, 2.0, 2.05, 2.1, 2.6, 3.0, 3.05, 3.2, 4.0])
    clock = [0.0]

    class Clumpy(io.VideoInput):
        def __init__(self) -> None:
            super().__init__(label="clumpy")

        async def __anext__(self) -> rtc.VideoFrame:
            clock[0] = next(times, None) if clock[0] is not None else None  # type: ignore[assignment]
            if clock[0] is None:
                raise StopAsyncIteration
            return solid_i420(64, 48, (0, 0, 0))

    track = [vision.TrackState(CAMERA, muted=False)]
    gate, sent, _ = gated(Clumpy(), clock, track, max_fps=1.0)
    await drain(gate)
    # 1.9 is late for 1.0: the grid stays (2.0, 3.0, 4.0), but each next frame waits half an
    # interval after the last one sent (2.4, 3.1).
    assert [at for at, _ in sent] == [0.0, 1.9, 2.6, 3.2, 4.0]
