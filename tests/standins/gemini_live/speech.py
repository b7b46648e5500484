"""What the stand-in says: espeak-ng speech or a steady tone, as PCM16 mono at a chosen rate."""

from __future__ import annotations

import functools
import logging
import math
import shutil
import subprocess

import numpy as np

from .protocol import OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH

log = logging.getLogger("gemini_live_standin")


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample PCM16 mono by linear interpolation (test-quality, no filtering).

    Args:
        pcm: little-endian int16 samples at ``src_rate`` Hz.
        src_rate / dst_rate: sample rates in Hz.

    Returns:
        little-endian int16 samples at ``dst_rate`` Hz.
    """
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if src_rate == dst_rate or x.size == 0:
        return bytes(pcm)
    n_out = int(round(x.size * dst_rate / src_rate))
    t_out = np.arange(n_out) * (src_rate / dst_rate)
    y = np.interp(t_out, np.arange(x.size), x)
    return bytes(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes())


def _parse_wav(data: bytes) -> tuple[int, bytes]:
    """(sample rate Hz, PCM16 bytes) from a mono 16-bit WAV whose sizes may be bogus.

    espeak-ng ``--stdout`` writes a streaming header (RIFF and data sizes
    0x7ffff000), so the ``wave`` module cannot be trusted with it.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if channels != 1 or bits != 16:
                raise ValueError(f"expected mono 16-bit WAV, got {channels} ch {bits} bit")
        elif chunk_id == b"data":
            pcm = data[body:]
            return rate, pcm[: len(pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH]
        pos = body + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


@functools.lru_cache(maxsize=256)
def speech_pcm(
    text: str, sample_rate: int = OUTPUT_SAMPLE_RATE, voice: str = "en-us", wpm: int = 175
) -> bytes:
    """``text`` spoken by espeak-ng, as PCM16 mono at ``sample_rate`` Hz (cached).

    Used for the stand-in's replies (24 kHz) and handy for fake microphones
    (16 kHz). If espeak-ng is not installed, returns a 440 Hz tone of about
    0.3 s per word instead and logs that it did.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        log.warning("espeak-ng not found: speaking %r as a tone instead of speech", text)
        seconds = 0.3 * max(1, len(text.split()))
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        tone = 0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)
        return tone.astype("<i2").tobytes()
    wav = subprocess.run(
        [espeak, "--stdout", "--stdin", "-v", voice, "-s", str(wpm)],
        input=text.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    rate, pcm = _parse_wav(wav)
    return resample_pcm16(pcm, rate, sample_rate)



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

