"""A caller made of the LiveKit Python SDK: gets a token over HTTP, joins, talks and listens.

It behaves like a browser tab: its microphone track sends audio continuously (silence
between utterances, as a real microphone does, so the model's VAD can see speech end),
it subscribes to the agent's audio and records every frame's level with its arrival time
(`time.monotonic()`), and it collects the `lk.transcription` text streams. It can also show
the agent a camera or a screen share (`Caller.publish_video`): a solid colour at a frame rate.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from tests.audio import rms_dbfs
from voice_calls.notices import TOPIC as NOTICE_TOPIC

#: Caller microphone format: what a browser's Opus track carries (48 kHz mono), 10 ms frames.
MIC_SAMPLE_RATE = 48_000
FRAME_MS = 10
#: Agent audio above this level counts as sound (dBFS).
AUDIBLE_DBFS = -45.0


def request_token(token_url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """POST to the token endpoint; returns (HTTP status, JSON body) for successes and errors alike."""
    request = urllib.request.Request(
        token_url,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class TokenRefused(RuntimeError):
    """The token endpoint did not answer 201: `status` and the JSON `body` it sent."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"token endpoint answered {status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        """The error code of the JSON body (`at_capacity`, ...), or the status."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code")) if isinstance(error, dict) else str(self.status)


@dataclass
class TranscriptEvent:
    """One finished `lk.transcription` text stream as the caller received it."""

    identity: str
    segment_id: str
    text: str
    final: bool
    received_at: float


@dataclass
class AgentAudio:
    """The agent's audio as heard: (arrival time, dBFS) per frame, and the samples."""

    levels: list[tuple[float, float]] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)

    def first_audible_after(self, t: float) -> float | None:
        """Arrival time of the first audible frame after monotonic time `t`, or None."""
        return next((at for at, db in self.levels if at > t and db > AUDIBLE_DBFS), None)

    def audible_seconds(self, frame_ms: float = FRAME_MS) -> float:
        """How much audible agent audio arrived, in seconds."""
        return sum(1 for _, db in self.levels if db > AUDIBLE_DBFS) * frame_ms / 1000


class VideoPublisher:
    """A camera or screen-share track of one solid colour, sent at `fps` until `stop()`.

    Attributes:
        publication: the track's publication (mute it with `publication.track.mute()`).
        frames_sent: frames handed to WebRTC so far.
    """

    def __init__(self, room: rtc.Room, source: rtc.TrackSource.ValueType, size: tuple[int, int], fps: float) -> None:
        self._room = room
        self._source_kind = source
        self._size = size
        self._fps = fps
        self._video = rtc.VideoSource(*size)
        self._colour: tuple[int, int, int] = (0, 0, 0)
        self._frame: rtc.VideoFrame | None = None
        self._task: asyncio.Task[None] | None = None
        self.publication: rtc.LocalTrackPublication | None = None
        self.frames_sent = 0

    def show(self, rgb: tuple[int, int, int]) -> None:
        """Send frames of colour `rgb` (0-255 per channel) from now on."""
        width, height = self._size
        rgba = np.empty((height, width, 4), np.uint8)
        rgba[:, :] = (*rgb, 255)
        self._colour = rgb
        self._frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()).convert(
            rtc.VideoBufferType.I420
        )

    async def start(self, rgb: tuple[int, int, int]) -> rtc.LocalTrackPublication:
        """Publish the track (`TrackSource` as given) and start sending `rgb` frames.

        Raises:
            Exception: the SDK's error (or a timeout) when livekit-server refuses the source.
        """
        self.show(rgb)
        name = "camera" if self._source_kind == rtc.TrackSource.SOURCE_CAMERA else "screen"
        track = rtc.LocalVideoTrack.create_video_track(name, self._video)
        self._task = asyncio.create_task(self._send())
        self.publication = await asyncio.wait_for(
            self._room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=self._source_kind)), 20
        )
        return self.publication

    async def stop(self) -> None:
        """Stop sending and unpublish the track."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.publication is not None and self._room.isconnected():
            await self._room.local_participant.unpublish_track(self.publication.sid)
        self.publication = None

    async def _send(self) -> None:
        started = next_at = time.monotonic()
        while True:
            assert self._frame is not None
            self._video.capture_frame(self._frame, timestamp_us=int((next_at - started) * 1e6))
            self.frames_sent += 1
            next_at += 1 / self._fps
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


class Caller:
    """One participant in a call with the agent.

    Use as `async with Caller(token_url) as caller:`; then `await caller.say(samples)`.

    Args:
        token_url: the token endpoint, asked for a token (a fresh room) on entry.
        name: the participant name sent with the token request.
        token: a token answer to join with instead (`server_url`, `participant_token`,
            `participant_identity`): rejoining a room, as a client's full reconnect does.
        mic_frame_ms: microphone frame length, ms (10 as a browser's WebRTC; load tests
            use 20 to halve the generator's own work).
        queue_size_ms: the microphone `AudioSource`'s queue, ms (0 hands each frame to WebRTC
            directly: no caller-side buffering in latency benchmarks; WebRTC then takes 10 ms
            frames only, so `mic_frame_ms` must be 10).
        listen_rate: sample rate the agent's audio is decoded to, Hz.
        listen_frame_ms: length of the frames the agent's audio arrives in (and is measured
            by), ms; None: LiveKit's default (10 ms).
    """

    def __init__(
        self,
        token_url: str,
        name: str = "Test Caller",
        token: dict[str, Any] | None = None,
        *,
        mic_frame_ms: int = FRAME_MS,
        queue_size_ms: int = 100,
        listen_rate: int = MIC_SAMPLE_RATE,
        listen_frame_ms: int | None = None,
    ) -> None:
        self.token_url = token_url
        self.name = name
        self.room = rtc.Room()
        self.token: dict[str, Any] = dict(token or {})
        self.transcripts: list[TranscriptEvent] = []
        self.agent_audio = AgentAudio()
        self.joined_at = 0.0
        self.token_status = 0
        self.first_speech_sent_at = 0.0
        self.last_speech_sent_at = 0.0
        if queue_size_ms == 0 and mic_frame_ms != FRAME_MS:
            raise ValueError(f"a microphone without a queue takes {FRAME_MS} ms frames only")
        self._frame_samples = MIC_SAMPLE_RATE * mic_frame_ms // 1000
        self._mic_task: asyncio.Task[None] | None = None
        self._listen_rate = listen_rate
        self._listen_frame_ms = listen_frame_ms
        self._speech_dbfs = -40.0
        self._speech: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._speech_done: asyncio.Event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._videos: list[VideoPublisher] = []
        self._source = rtc.AudioSource(MIC_SAMPLE_RATE, 1, queue_size_ms=queue_size_ms)
        #: The server's notices (data messages on `NOTICE_TOPIC`): (arrival, JSON payload).
        self.notices: list[tuple[float, dict[str, Any]]] = []
        #: Why the room disconnected us (a `DisconnectReason` name), once it has.
        self.disconnect_reason: str | None = None
        self.disconnected_at: float | None = None

    async def __aenter__(self) -> Caller:
        if not self.token:
            status, body = await asyncio.to_thread(request_token, self.token_url, {"participant_name": self.name})
            self.token_status = status
            if status != 201:
                raise TokenRefused(status, body)
            self.token = body
        body = self.token
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("data_received", self._on_data)
        self.room.on("room_metadata_changed", self._on_room_metadata)
        self.room.on("disconnected", self._on_disconnected)
        await self.room.connect(body["server_url"], body["participant_token"])
        self.joined_at = time.monotonic()
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._mic_task = asyncio.create_task(self._microphone())
        self._tasks.append(self._mic_task)
        return self

    async def publish_video(
        self,
        rgb: tuple[int, int, int],
        *,
        source: rtc.TrackSource.ValueType = rtc.TrackSource.SOURCE_CAMERA,
        size: tuple[int, int] = (640, 480),
        fps: float = 30.0,
    ) -> VideoPublisher:
        """Show the agent a solid `rgb` picture of `size` (width, height px) at `fps`, as a
        camera (default) or a screen share (`source`). Unpublished on leaving.

        Raises:
            Exception: the SDK's error (or a timeout) when livekit-server refuses the source.
        """
        video = VideoPublisher(self.room, source, size, fps)
        self._videos.append(video)
        await video.start(rgb)
        return video

    async def __aexit__(self, *exc: object) -> None:
        for video in self._videos:
            await video.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()

    @property
    def identity(self) -> str:
        """The identity the token server issued."""
        return str(self.token["participant_identity"])

    async def say(self, samples: np.ndarray, speech_dbfs: float = -40.0) -> float:
        """Speak `samples` (int16, 48 kHz) into the microphone in real time.

        Args:
            samples: the utterance; trailing quiet frames are sent too.
            speech_dbfs: a 10 ms frame louder than this counts as speech (dBFS).

        Returns:
            Monotonic time at which the utterance's last speech frame was handed to WebRTC
            (`first_speech_sent_at` holds its first one).
        """
        self._speech_dbfs = speech_dbfs
        self.first_speech_sent_at = 0.0
        self._speech_done.clear()
        await self._speech.put(samples)
        done = asyncio.ensure_future(self._speech_done.wait())
        assert self._mic_task is not None, "say() before joining"
        await asyncio.wait([done, self._mic_task], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():  # the microphone stopped: say why instead of waiting forever
            done.cancel()
            self._mic_task.result()
            raise RuntimeError("the microphone stopped")
        return self.last_speech_sent_at

    async def _microphone(self) -> None:
        """Feed frames at real-time pace: queued speech, else silence."""
        size = self._frame_samples
        silence = np.zeros(size, dtype=np.int16)
        pending: np.ndarray | None = None
        offset = 0
        next_at = time.monotonic()
        while True:
            if pending is None and not self._speech.empty():
                pending, offset = self._speech.get_nowait(), 0
            if pending is not None:
                chunk = pending[offset : offset + size]
                chunk = np.pad(chunk, (0, size - len(chunk)))
                offset += size
            else:
                chunk = silence
            frame = rtc.AudioFrame(chunk.tobytes(), MIC_SAMPLE_RATE, 1, size)
            await self._source.capture_frame(frame)
            if pending is not None and rms_dbfs(chunk) > self._speech_dbfs:
                self.last_speech_sent_at = time.monotonic()
                self.first_speech_sent_at = self.first_speech_sent_at or self.last_speech_sent_at
            if pending is not None and offset >= len(pending):
                pending = None
                self._speech_done.set()
            next_at += size / MIC_SAMPLE_RATE
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _on_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(
            track, sample_rate=self._listen_rate, num_channels=1, frame_size_ms=self._listen_frame_ms
        )
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            self.agent_audio.levels.append((time.monotonic(), rms_dbfs(samples)))
            self.agent_audio.chunks.append(samples)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == NOTICE_TOPIC:
            self.notices.append((time.monotonic(), json.loads(packet.data)))

    def _on_room_metadata(self, _old: str, metadata: str) -> None:
        try:
            notice = json.loads(metadata or "{}").get(NOTICE_TOPIC)
        except (ValueError, AttributeError):
            return
        if notice:
            self.notices.append((time.monotonic(), notice))

    def _on_disconnected(self, reason: int) -> None:
        self.disconnected_at = time.monotonic()
        self.disconnect_reason = rtc.DisconnectReason.Name(reason)

    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            attributes = reader.info.attributes or {}
            self.transcripts.append(
                TranscriptEvent(
                    identity=identity,
                    segment_id=attributes.get("lk.segment_id", ""),
                    text=text,
                    final=attributes.get("lk.transcription_final") == "true",
                    received_at=time.monotonic(),
                )
            )

        self._tasks.append(asyncio.create_task(read()))

    def agent_identity(self) -> str | None:
        """Identity of the agent participant in the room, once it has joined."""
        return next(
            (p.identity for p in self.room.remote_participants.values()
             if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT),
            None,
        )

    def transcript_of(self, identity: str) -> list[TranscriptEvent]:
        """Finished transcript streams whose speaker is `identity`."""
        return [t for t in self.transcripts if t.identity == identity]

    async def wait_until(self, predicate: Any, timeout_s: float, what: str) -> None:
        """Poll `predicate()` every 50 ms.

        Raises:
            AssertionError: naming `what`, when it is still false after `timeout_s` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(0.05)
