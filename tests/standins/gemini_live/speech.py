"""What the stand-in says: espeak-ng speech or a steady tone, as PCM16 mono at a chosen rate."""

from __future__ import annotations

import functools
import logging
import math
import shutil

import numpy as np

from tests.audio import synthesize

from .protocol import OUTPUT_SAMPLE_RATE

log = logging.getLogger("gemini_live_standin")


@functools.lru_cache(maxsize=256)
def speech_pcm(
    text: str, sample_rate: int = OUTPUT_SAMPLE_RATE, voice: str = "en-us", wpm: int = 175
) -> bytes:
    """``text`` spoken by espeak-ng (`tests.audio.synthesize`, the tests' one synthesiser), as
    PCM16 mono at ``sample_rate`` Hz (cached).

    Used for the stand-in's replies (24 kHz) and handy for fake microphones
    (16 kHz). If espeak-ng is not installed, returns a 440 Hz tone of about
    0.3 s per word instead and logs that it did.
    """
    if shutil.which("espeak-ng") is None:
        log.warning("espeak-ng not found: speaking %r as a tone instead of speech", text)
        return tone_pcm(len(text.split()), sample_rate)
    return synthesize(text, sample_rate, voice, wpm).tobytes()


#: Seconds of tone per word of a reply spoken as a tone (espeak-ng at 175 wpm: ~0.34 s).
TONE_S_PER_WORD = 0.3
#: Level of the reply tone, dBFS (RMS).
TONE_DBFS = -16.0


@functools.lru_cache(maxsize=64)
def tone_pcm(words: int, sample_rate: int = OUTPUT_SAMPLE_RATE, hz: float = 440.0) -> bytes:
    """A steady sine of ``TONE_S_PER_WORD`` s per word (at least one) at ``TONE_DBFS``, PCM16
    mono at ``sample_rate`` Hz, with 5 ms fades so it starts and ends without a click."""
    n = int(max(1, words) * TONE_S_PER_WORD * sample_rate)
    t = np.arange(n) / sample_rate
    amplitude = 32768 * 10 ** (TONE_DBFS / 20) * math.sqrt(2)
    wave = amplitude * np.sin(2 * np.pi * hz * t)
    fade = min(n // 2, sample_rate * 5 // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return wave.astype("<i2").tobytes()

