"""What the caller shows the model: camera or screen-share frames to Gemini Live (`VIDEO_INPUT`).

    caller's camera / screen share (VP8, up to 30 fps) -> LiveKit SFU
      -> RoomIO video input (decoded frames of the linked caller's camera or screen share;
         the one published last wins, as livekit-agents' RoomIO decides)
      -> `VisionInput`: drops frames while that track is muted, from a source `VIDEO_INPUT`
         does not allow, or ahead of a grid of 1 / `VIDEO_INPUT_MAX_FPS` s (at most that many a second);
         scales the rest down (never up) to `VIDEO_INPUT_MAX_PX` on the longest side
      -> AgentSession -> the Google plugin's `push_video`: JPEG (`JPEG_OPTIONS`)
      -> Gemini Live `realtimeInput.video`

When what the model sees changes (the camera comes on, a screen share starts or ends), the
model is told in a context note (a user turn it does not answer: Gemini Live's
``clientContent`` with ``turnComplete: false``), and the call record gets a lifecycle event;
every frame sent is counted in the record's `video_frames`.

Everything here is livekit-agents' public API: `io.VideoInput` chained on RoomIO's video input
(`session.room_io.video_input`, whose `publication_source` names the track it reads) and the
AgentSession's `video_sampler` hook.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.utils import images
from livekit.agents.voice import io
from voice_calls.records import LIFECYCLE

from .records import CallRecorder
from .settings import AgentSettings

logger = logging.getLogger("voice_agent.vision")

#: The LiveKit track sources each `VIDEO_INPUT` lets through (the token server grants the same).
SOURCES: dict[str, frozenset[int]] = {
    "off": frozenset(),
    "camera": frozenset({rtc.TrackSource.SOURCE_CAMERA}),
    "screen": frozenset({rtc.TrackSource.SOURCE_SCREENSHARE}),
    "both": frozenset({rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_SCREENSHARE}),
}
#: How frames are encoded for the model: JPEG at the plugin's quality, no resizing there (its
#: `scale_aspect_fit` would blow a 640x480 camera up to 1024x768); `VisionInput` bounds the size.
JPEG_OPTIONS = images.EncodeOptions(format="JPEG", quality=75, resize_options=None)
#: Source names in logs, records and the notes to the model.
SOURCE_NAMES = {rtc.TrackSource.SOURCE_CAMERA: "camera", rtc.TrackSource.SOURCE_SCREENSHARE: "screen_share"}
#: What the model is told when it starts or stops seeing something.
NOTES = {
    "camera": (
        "[The caller turned on their camera. From now on you also receive still frames from it, "
        "about one a second: use them when the caller talks about what they show you.]"
    ),
    "screen_share": (
        "[The caller is sharing their screen. From now on you also receive still frames of it, "
        "about one a second: use them when the caller talks about what is on their screen.]"
    ),
    None: "[The caller stopped showing video: you no longer see their camera or screen.]",
}


def enabled(video_input: str) -> bool:
    """Whether `VIDEO_INPUT` lets a caller show anything (RoomIO's video input is on)."""
    return bool(SOURCES[video_input])


def only_through_vision(_frame: rtc.VideoFrame, session: AgentSession) -> bool:
    """The AgentSession's `video_sampler`: a frame reaches the model only through `VisionInput`
    (RoomIO's own input, before `attach` replaces it, forwards nothing)."""
    return isinstance(session.input.video, VisionInput)


def bounded_size(width: int, height: int, max_px: int) -> tuple[int, int]:
    """(width, height) scaled down to at most `max_px` on the longest side, aspect kept; never up."""
    longest = max(width, height)
    if longest <= max_px:
        return width, height
    scale = max_px / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_down(frame: rtc.VideoFrame, max_px: int) -> rtc.VideoFrame:
    """`frame` itself when it fits `max_px`; else an RGBA copy scaled down to fit (Pillow, bilinear)."""
    size = bounded_size(frame.width, frame.height, max_px)
    if size == (frame.width, frame.height):
        return frame
    from PIL import Image  # livekit-agents[images]

    rgba = frame if frame.type == rtc.VideoBufferType.RGBA else frame.convert(rtc.VideoBufferType.RGBA)
    image = Image.frombytes("RGBA", (frame.width, frame.height), bytes(rgba.data))
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rtc.VideoFrame(size[0], size[1], rtc.VideoBufferType.RGBA, small.tobytes())


@dataclass(frozen=True)
class TrackState:
    """The video track the caller's frames come from: its LiveKit source and whether it is muted."""

    source: int
    muted: bool


class VisionInput(io.VideoInput):
    """The session's video input: RoomIO's, gated, paced and bounded (see the module docstring).

    Args:
        source: RoomIO's video input (`session.room_io.video_input`).
        track: the state of the track `source` reads now, or None (nothing subscribed).
        allowed: the LiveKit track sources let through (`SOURCES[VIDEO_INPUT]`).
        max_fps: at most this many frames per second go on (> 0).
        max_px: frames are scaled down to at most this many pixels on the longest side.
        on_frame: called with the source name (``camera`` or ``screen_share``) of each frame
            that goes on.
        on_seeing: called with what the model sees from now on (a source name, or None when it
            stopped seeing anything), before the first frame of a new source goes on.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        source: io.VideoInput,
        *,
        track: Callable[[], TrackState | None],
        allowed: frozenset[int],
        max_fps: float,
        max_px: int,
        on_frame: Callable[[str], None] = lambda _source: None,
        on_seeing: Callable[[str | None], None] = lambda _source: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(label="Vision", source=source)
        self._track = track
        self._allowed = allowed
        self._interval_s = 1.0 / max_fps
        self._max_px = max_px
        self._on_frame = on_frame
        self._on_seeing = on_seeing
        self._clock = clock
        self._due_at: float | None = None  # the next frame's place on the grid (clock time)
        self._not_before = 0.0  # and the earliest it may go on
        self.seeing: str | None = None
        self.frames: Counter[str] = Counter()
        self.dropped = 0

    async def __anext__(self) -> rtc.VideoFrame:
        assert self.source is not None
        while True:
            frame = await self.source.__anext__()
            name = self._admit()
            if name is None:
                self.dropped += 1
                continue
            self.frames[name] += 1
            self._on_frame(name)
            return scale_down(frame, self._max_px)

    def track_changed(self) -> None:
        """The caller's tracks changed (muted, unmuted, unpublished): say so if the model no
        longer sees anything. A new source is announced with its first frame."""
        if self.seeing is not None and self._visible() is None:
            self._see(None)

    def _visible(self) -> str | None:
        state = self._track()
        if state is None or state.muted or state.source not in self._allowed:
            return None
        return SOURCE_NAMES.get(state.source)

    def _admit(self) -> str | None:
        name = self._visible()
        if name is None:
            if self.seeing is not None:
                self._see(None)
            return None
        now = self._clock()
        if self._due_at is not None and now < max(self._due_at, self._not_before):
            return None
        # On a grid of 1 / max_fps s, so a 30 fps camera gives max_fps exactly, not a frame
        # period less; a late frame keeps the grid but the next one waits at least half an
        # interval (no bursts); a source that paused (or was muted) starts a new grid.
        on_time = self._due_at is not None and now - self._due_at < self._interval_s
        self._due_at = (self._due_at if on_time else now) + self._interval_s  # type: ignore[operator]
        self._not_before = now + self._interval_s / 2
        if name != self.seeing:
            self._see(name)
        return name

    def _see(self, name: str | None) -> None:
        self.seeing = name
        self._on_seeing(name)


def track_of(session: AgentSession, stream: io.VideoInput) -> Callable[[], TrackState | None]:
    """The state of the track RoomIO's video `stream` reads: the linked caller's publication of
    the source it names (`publication_source`, 0 while nothing is subscribed)."""

    def state() -> TrackState | None:
        source = getattr(stream, "publication_source", rtc.TrackSource.SOURCE_UNKNOWN)
        participant = session.room_io.linked_participant
        if participant is None or source == rtc.TrackSource.SOURCE_UNKNOWN:
            return None
        for publication in participant.track_publications.values():
            if publication.source == source and publication.kind == rtc.TrackKind.KIND_VIDEO:
                return TrackState(source, publication.muted)
        return None

    return state


class Vision:
    """The call's vision: installs `VisionInput`, tells the model and the record what it sees.

    Args:
        session: the started AgentSession (its RoomIO has video input on).
        agent: the agent whose chat context gets the notes to the model.
        video_input, max_fps, max_px: the settings (`VIDEO_INPUT`, `VIDEO_INPUT_MAX_FPS`,
            `VIDEO_INPUT_MAX_PX`).
        count_frame: called for each frame sent (the call record's counter), or None.
        event: called with (name, fields) for the call record's lifecycle events, or None.

    Raises:
        RuntimeError: the session was started without RoomIO's video input.
    """

    def __init__(
        self,
        session: AgentSession,
        agent: Agent,
        *,
        video_input: str,
        max_fps: float,
        max_px: int,
        count_frame: Callable[[], None] | None = None,
        event: Callable[[str, dict[str, object]], None] | None = None,
    ) -> None:
        stream = session.room_io.video_input
        if stream is None:
            raise RuntimeError("the session was started without video input (RoomOptions(video_input=True))")
        self._agent = agent
        self._count_frame = count_frame
        self._event = event
        self._notes: set[asyncio.Task[None]] = set()
        self.input = VisionInput(
            stream,
            track=track_of(session, stream),
            allowed=SOURCES[video_input],
            max_fps=max_fps,
            max_px=max_px,
            on_frame=self._frame_sent,
            on_seeing=self._seeing,
        )
        logger.info(
            "vision on: the caller may show %s; at most %g frames/s, %d px on the longest side",
            video_input, max_fps, max_px,
        )
        room = session.room_io.room
        for name in ("track_muted", "track_unmuted", "track_unpublished", "track_unsubscribed"):
            room.on(name, self._on_track_event)
        session.input.video = self.input

    def _on_track_event(self, *_args: object) -> None:
        self.input.track_changed()

    def _frame_sent(self, _source: str) -> None:
        if self._count_frame is not None:
            self._count_frame()

    def _seeing(self, source: str | None) -> None:
        frames = dict(self.input.frames)
        logger.info("the model now sees %s (frames sent so far: %s)", source or "nothing", frames or 0)
        if self._event is not None:
            self._event("video_started" if source else "video_stopped", {"source": source, "frames": frames})
        task = asyncio.get_running_loop().create_task(self._tell_model(NOTES[source]))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def _tell_model(self, note: str) -> None:
        """Add `note` to the model's context as a user turn that asks for no reply."""
        chat_ctx = self._agent.chat_ctx.copy()
        chat_ctx.add_message(role="user", content=note)
        try:
            await self._agent.update_chat_ctx(chat_ctx)
        except (RuntimeError, llm.RealtimeError) as exc:  # the session is closing
            logger.debug("could not tell the model what it sees: %s", exc)


def attach(session: AgentSession, agent: Agent, settings: AgentSettings, call: CallRecorder | None) -> Vision | None:
    """Give the started `session` the caller's video as `settings` allow (None when `VIDEO_INPUT`
    is off), counting frames and logging what the model sees in `call`'s record."""
    if not enabled(settings.video_input):
        return None
    return Vision(
        session,
        agent,
        video_input=settings.video_input,
        max_fps=settings.video_input_max_fps,
        max_px=settings.video_input_max_px,
        count_frame=call.count_video_frame if call is not None else None,
        event=(lambda name, fields: call.event(LIFECYCLE, {"event": name, **fields})) if call is not None else None,
    )
