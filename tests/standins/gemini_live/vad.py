"""The stand-in's voice activity detection: an energy VAD over 16 kHz PCM16 mono.

The real service's detector is not an energy VAD; this one finds turns honestly from the
audio's level, with the setup's silence window and start/end sensitivities applied
(:func:`vad_thresholds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from google.genai import types

from tests.audio import rms_dbfs

from .protocol import INPUT_SAMPLE_RATE, SAMPLE_WIDTH


@dataclass(frozen=True)
class VadEvent:
    """A speech start or end found by the stand-in's VAD.

    Attributes:
        kind: ``"start"`` or ``"end"``.
        audio_ms: position in the session's input audio, ms from its first byte:
            start = first speech frame, end = end of the last speech frame.
        at: ``time.monotonic()`` arrival of the chunk holding that frame.
        declared_at: ``time.monotonic()`` when the VAD decided (start: after
            ``vad_min_speech_ms`` of speech; end: after ``vad_silence_ms`` of silence).
    """

    kind: Literal["start", "end"]
    audio_ms: float
    at: float
    declared_at: float



#: dB by which a sensitivity setting moves the energy VAD's threshold (see `vad_thresholds`).
SENSITIVITY_DB = 6.0


def vad_thresholds(base_dbfs: float, aad: types.AutomaticActivityDetection | None) -> tuple[float, float]:
    """(start, end) frame thresholds in dBFS for a setup's activity-detection sensitivities.

    The real service's detector is not an energy VAD; this is the stand-in's honest
    approximation of the documented meaning (google-genai ``StartSensitivity`` /
    ``EndSensitivity``): start HIGH "detects the start of speech more often", so quieter
    frames start it (``base - SENSITIVITY_DB``), LOW needs louder ones; end HIGH "ends speech
    more often", so a frame must be louder to keep speech going (``base + SENSITIVITY_DB``),
    LOW lets quieter tails continue it. Unspecified: ``base`` for both.
    """
    start = end = base_dbfs
    if aad is not None:
        if aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_HIGH:
            start -= SENSITIVITY_DB
        elif aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_LOW:
            start += SENSITIVITY_DB
        if aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_HIGH:
            end += SENSITIVITY_DB
        elif aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_LOW:
            end -= SENSITIVITY_DB
    return start, end



class EnergyVad:
    """Energy voice-activity detector over 16 kHz PCM16 mono.

    Each ``frame_ms`` frame is speech when its RMS level is at or above
    ``threshold_dbfs``. Speech starts after ``min_speech_ms`` of consecutive speech
    frames (its start is the first of them) and ends after ``silence_ms`` of
    frames below ``end_threshold_dbfs`` (default: ``threshold_dbfs``; its end is the
    end of the last speech frame). Positions are in audio time, so the result does not
    depend on how fast audio arrives.
    """

    def __init__(
        self,
        *,
        sample_rate: int = INPUT_SAMPLE_RATE,
        frame_ms: int = 20,
        threshold_dbfs: float = -40.0,
        min_speech_ms: int = 60,
        silence_ms: int = 500,
        end_threshold_dbfs: float | None = None,
    ) -> None:
        self._frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self._frame_ms = frame_ms
        self._threshold = threshold_dbfs
        self._end_threshold = threshold_dbfs if end_threshold_dbfs is None else end_threshold_dbfs
        self._min_speech_frames = max(1, math.ceil(min_speech_ms / frame_ms))
        self._silence_frames_needed = max(1, math.ceil(silence_ms / frame_ms))
        self._pending = bytearray()
        self._frame_index = 0
        self._run = 0
        self._run_start: tuple[int, float] = (0, 0.0)
        self._silence = 0
        self._last_voiced: tuple[int, float] = (0, 0.0)
        self.in_speech = False

    def feed(self, pcm: bytes, at: float) -> list[VadEvent]:
        """Process a chunk that arrived at ``at`` (monotonic s); returns events found."""
        self._pending += pcm
        events: list[VadEvent] = []
        while len(self._pending) >= self._frame_bytes:
            frame = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            level = rms_dbfs(frame)
            voiced = level >= (self._end_threshold if self.in_speech else self._threshold)
            index = self._frame_index
            self._frame_index += 1
            if not self.in_speech:
                if not voiced:
                    self._run = 0
                    continue
                if self._run == 0:
                    self._run_start = (index, at)
                self._run += 1
                if self._run >= self._min_speech_frames:
                    self.in_speech = True
                    self._silence = 0
                    self._last_voiced = (index + 1, at)
                    start_frame, start_at = self._run_start
                    events.append(VadEvent("start", start_frame * self._frame_ms, start_at, at))
            elif voiced:
                self._silence = 0
                self._last_voiced = (index + 1, at)
            else:
                self._silence += 1
                if self._silence >= self._silence_frames_needed:
                    events.append(self._end(at))
        return events

    def flush(self, at: float) -> VadEvent | None:
        """End speech now (activityEnd / audioStreamEnd); ``None`` if not in speech."""
        return self._end(at) if self.in_speech else None

    def _end(self, declared_at: float) -> VadEvent:
        self.in_speech = False
        self._run = 0
        self._silence = 0
        end_frame, end_at = self._last_voiced
        return VadEvent("end", end_frame * self._frame_ms, end_at, declared_at)

