"""Headless Debian Chromium for browser tests: launch flags, a fake microphone playing a WAV
of real speech (espeak-ng), viewports, and screenshots for people to look at.

Chromium runs without `--use-fake-ui-for-media-stream`: a test grants the microphone per
browser context, so a context without the permission is a user who said no.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, Page, Playwright

from tests.audio import synthesize, write_wav

CHROMIUM = "/usr/lib/chromium/chromium"
FAKE_MIC_RATE = 48_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def speech_wav(path: Path, text: str, silence_s: float, lead_s: float = 3.0) -> Path:
    """A WAV for Chromium's fake microphone: `lead_s` of silence, the utterance, then silence (it loops)."""
    speech = synthesize(text, FAKE_MIC_RATE)
    lead = np.zeros(int(lead_s * FAKE_MIC_RATE), dtype=np.int16)
    silence = np.zeros(int(silence_s * FAKE_MIC_RATE), dtype=np.int16)
    return write_wav(path, np.concatenate([lead, speech, silence]), FAKE_MIC_RATE)


def solid_y4m(path: Path, rgb: tuple[int, int, int], size: tuple[int, int], fps: int, frames: int = 30) -> Path:
    """A Y4M video of one colour for Chromium's fake camera (it loops): `size` (width, height
    px, even), `fps` frames/s, I420 with BT.601 limited-range colour, as Chromium reads it."""
    r, g, b = (c / 255 for c in rgb)
    y = round(16 + 65.481 * r + 128.553 * g + 24.966 * b)
    u = round(128 - 37.797 * r - 74.203 * g + 112.0 * b)
    v = round(128 + 112.0 * r - 93.786 * g - 18.214 * b)
    width, height = size
    quarter = width * height // 4
    frame = b"FRAME\n" + bytes([y]) * (width * height) + bytes([u]) * quarter + bytes([v]) * quarter
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


def launch(playwright: Playwright, wav: Path, camera: Path | None = None) -> Browser:
    """Debian's Chromium, headless, whose fake microphone plays `wav` (looping), and whose fake
    camera plays `camera` (a Y4M, see `solid_y4m`) if given, else Chromium's test pattern."""
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    if camera is not None:
        args.append(f"--use-file-for-fake-video-capture={camera}")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def screenshot(page: Page, artifacts: Path, name: str) -> None:
    """The whole page as `artifacts/screenshots/<name>.png`."""
    folder = artifacts / "screenshots"
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
