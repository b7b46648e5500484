"""Audio helpers for tests and benchmarks: real speech from espeak-ng, and level envelopes.

Sample format everywhere: mono PCM16 (int16) in numpy arrays, with the sample rate in Hz
passed alongside.
"""

from __future__ import annotations

import functools
import math
import subprocess
import wave
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=32)
def synthesize(text: str, sample_rate: int, voice: str = "en-us", speed_wpm: int = 160) -> np.ndarray:
    """Speak `text` with espeak-ng and resample it with sox.

    Returns:
        int16 mono samples at `sample_rate` Hz (read-only array, cached per arguments).

    Raises:
        subprocess.CalledProcessError: espeak-ng or sox failed (are they installed?).
    """
    espeak_args = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "--stdout", text]
    with subprocess.Popen(espeak_args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as espeak:
        raw = subprocess.run(  # sox reads while espeak-ng writes: one pass, not two
            ["sox", "-t", "wav", "-", "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1",
             "-r", str(sample_rate), "-"],
            stdin=espeak.stdout,
            check=True,
            capture_output=True,
        ).stdout
    if espeak.returncode != 0:
        raise subprocess.CalledProcessError(espeak.returncode, espeak_args)
    samples = np.frombuffer(raw, dtype=np.int16).copy()
    samples.setflags(write=False)
    return samples


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write int16 mono samples as a PCM WAV file (Chromium's fake microphone reads these)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return path


def rms_dbfs(samples: np.ndarray | bytes) -> float:
    """RMS level of PCM16 samples (int16 array, or little-endian bytes) in dBFS, full scale
    32768; about -210 for digital silence, -120 for none."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        samples = np.frombuffer(samples, dtype="<i2")
    if len(samples) == 0:
        return -120.0
    x = np.asarray(samples, dtype=np.float64).ravel()
    rms = (float(np.dot(x, x)) / x.size) ** 0.5  # one dot product: np.mean costs ~10x more per frame
    return 20 * math.log10(max(rms, 1e-6) / 32768.0)


def envelope(samples: np.ndarray, sample_rate: int, window_ms: int = 20) -> np.ndarray:
    """RMS level per `window_ms` window (float64, linear), independent of the sample rate."""
    size = sample_rate * window_ms // 1000
    usable = len(samples) // size * size
    frames = samples[:usable].astype(np.float64).reshape(-1, size)
    return np.sqrt(np.mean(np.square(frames), axis=1))


def best_envelope_match(sent: np.ndarray, received: np.ndarray) -> tuple[float, int]:
    """Slide the `sent` envelope over the `received` one; Pearson correlation at the best lag.

    Returns:
        (correlation in [-1, 1], lag in windows at which it was found).
    """
    if len(received) < len(sent):
        received = np.concatenate([received, np.zeros(len(sent) - len(received))])
    a = (sent - sent.mean()) / (sent.std() or 1.0)
    best, best_lag = -1.0, 0
    for lag in range(len(received) - len(sent) + 1):
        window = received[lag : lag + len(sent)]
        std = window.std()
        if std == 0:
            continue
        corr = float(np.mean(a * (window - window.mean()) / std))
        if corr > best:
            best, best_lag = corr, lag
    return best, best_lag


def envelope_correlation(
    sent: np.ndarray, sent_rate: int, received: np.ndarray, received_rate: int, window_ms: int = 20
) -> float:
    """How well the `received` audio's level envelope matches the `sent` one's (Pearson, best lag).

    The two are cut into `window_ms` windows on grids that need not line up: the received
    audio is tried at every 2 ms phase of the window, so a sub-window offset (where the
    receiver's first frame began) does not lower the figure.

    Args:
        sent, received: int16 samples at `sent_rate` and `received_rate` Hz.

    Returns:
        The best correlation, in [-1, 1].
    """
    reference = envelope(sent, sent_rate, window_ms)
    step = received_rate * 2 // 1000
    return max(best_envelope_match(reference, envelope(received[offset:], received_rate, window_ms))[0]
               for offset in range(0, received_rate * window_ms // 1000, step))


#: G.711 μ-law (ITU-T G.711): the bias added before the segment search, and the largest
#: magnitude it encodes.
_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def mulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples as G.711 μ-law bytes (PCMU, RTP payload type 0), one byte per sample."""
    pcm = np.asarray(samples, dtype=np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), _MULAW_CLIP) + _MULAW_BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 μ-law bytes as int16 samples (the inverse of `mulaw_encode`, up to quantisation)."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _MULAW_BIAS) << exponent
    return np.where(u & 0x80, _MULAW_BIAS - magnitude, magnitude - _MULAW_BIAS).astype(np.int16)
