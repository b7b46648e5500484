"""One connection of the stand-in: its setup, the client frames it receives, and its user turns.

A session reads ``setup`` first (``setupComplete``, then ``sessionResumptionUpdate``), then
records every frame: audio is kept byte for byte and run through the VAD (or delimited by
``activityStart``/``activityEnd`` when the setup disables automatic activity detection), text
turns come as ``client_content`` with ``turnComplete``, video frames are recorded, and tool
answers are matched. A finished user turn is handed to :class:`~.reply.Replies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from google.genai import types
from websockets.asyncio.server import ServerConnection

from .config import StandinConfig, TurnInput
from .outbox import Outbox
from .protocol import (
    AUDIO_TOKENS_PER_SECOND,
    IMAGE_TOKENS_PER_FRAME,
    INPUT_SAMPLE_RATE,
    SAMPLE_WIDTH,
    ProtocolError,
    content_text,
    message_kind,
    mime_rate,
    parse_client_frame,
    text_tokens,
)
from .recording import Recorder
from .records import AudioChunk, ClientMessageRecord, SessionRecord, SetupRecord, TurnRecord
from .reply import Replies
from .tools import ToolCalls
from .vad import EnergyVad, VadEvent, vad_thresholds
from .video import VideoFrameRecord, last_seen, read_image

log = logging.getLogger("gemini_live_standin")

_PLACEHOLDER_RE = re.compile(r"^\W*$")


class LiveSession:
    """Serves one WebSocket connection. Lives on the stand-in's event loop.

    Args:
        conn: the accepted connection.
        recorder: the stand-in's store (handles are issued and looked up there).
        record: this connection's record, already in ``recorder``.
        config: the stand-in's behaviour.
    """

    def __init__(
        self, conn: ServerConnection, recorder: Recorder, record: SessionRecord, config: StandinConfig
    ) -> None:
        self._conn = conn
        self._recorder = recorder
        self._rec = record
        self._cfg = config
        self._out = Outbox(conn, recorder, record)
        self._tools = ToolCalls(self._out)
        self._replies = Replies(self._out, config, self._tools, self.send_resumption_update)
        self._vad: EnergyVad | None = None
        self._interrupts_on_activity = True
        self._transparent_resumption = False
        self._consumed_index = -1
        self._manual_start: tuple[float, float] | None = None
        self._speech_start: VadEvent | None = None
        self._answered_early = False  # answer_at_speech_start: replied to the utterance in progress
        self._pending_context: list[tuple[str, str]] = []

    # ---- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection: ``setup`` first, then every frame until the client closes.

        A missing setup closes with 1008, a first frame that is not setup or an unparsable
        frame with 1007 (each recorded in :attr:`SessionRecord.errors`).
        """
        try:
            raw = await asyncio.wait_for(self._conn.recv(), self._cfg.setup_timeout_s)
        except TimeoutError:
            self._out.error(f"no setup frame within {self._cfg.setup_timeout_s} s")
            await self._conn.close(1008, "setup timeout")
            return
        message = self._ingest(raw)
        if message is None or message[0].setup is None:
            self._out.error("the first client message must be setup")
            await self._conn.close(1007, "first message must be setup")
            return
        await self._on_setup(message[0], message[1], raw)
        async for raw in self._conn:
            parsed = self._ingest(raw)
            if parsed is None:
                await self._conn.close(1007, "invalid frame")
                return
            await self._dispatch(parsed[0], parsed[2])

    async def stall(self) -> None:
        """Read the setup frame (recorded as usual), then answer nothing until the client leaves."""
        with contextlib.suppress(TimeoutError):
            raw = await asyncio.wait_for(self._conn.recv(), self._cfg.setup_timeout_s)
            self._ingest(raw)
        await self._conn.wait_closed()

    async def aclose(self) -> None:
        """Cancel work in flight (the connection is gone or going)."""
        await self._replies.aclose()

    # ---- incoming ---------------------------------------------------------------

    def _ingest(self, raw: str | bytes) -> tuple[types.LiveClientMessage, dict[str, Any], float] | None:
        at = time.monotonic()
        size = len(raw)
        try:
            message, extras = parse_client_frame(raw)
        except ProtocolError as e:
            with self._out.mutate():
                self._rec.messages.append(ClientMessageRecord(at, "invalid", None, size))
                self._rec.errors.append(str(e))
            log.warning("%s: %s", self._rec.session_id, e)
            return None
        self._consumed_index += 1
        with self._out.mutate():
            self._rec.messages.append(ClientMessageRecord(at, message_kind(message), message, size))
        return message, extras, at

    async def _dispatch(self, message: types.LiveClientMessage, at: float) -> None:
        if message.setup is not None:
            self._out.error("setup sent twice")
        elif message.realtime_input is not None:
            await self._on_realtime_input(message.realtime_input, at)
        elif message.client_content is not None:
            await self._on_client_content(message.client_content, at)
        elif message.tool_response is not None:
            self._tools.answer(message.tool_response, at)
        # context_update: recorded only.

    async def _on_setup(
        self, message: types.LiveClientMessage, extras: dict[str, Any], raw: str | bytes
    ) -> None:
        setup = message.setup
        assert setup is not None
        ric: types.RealtimeInputConfig | None = extras.get("realtime_input_config")
        aad = ric.automatic_activity_detection if ric else None
        silence_ms = (
            aad.silence_duration_ms if aad and aad.silence_duration_ms else None
        ) or self._cfg.vad_silence_ms
        prefix_ms = aad.prefix_padding_ms if aad and aad.prefix_padding_ms is not None else self._cfg.vad_min_speech_ms
        if self._cfg.answer_at_speech_start:
            prefix_ms = 0  # the first loud frame is the start (and the answer)
        start_dbfs, end_dbfs = vad_thresholds(self._cfg.vad_threshold_dbfs, aad)
        automatic = not (aad and aad.disabled)
        self._interrupts_on_activity = not (
            ric and ric.activity_handling == types.ActivityHandling.NO_INTERRUPTION
        )
        self._transparent_resumption = bool(setup.session_resumption and setup.session_resumption.transparent)
        functions = tuple(
            fd.name or ""
            for tool in (setup.tools or [])
            if isinstance(tool, types.Tool)
            for fd in (tool.function_declarations or [])
        )
        handle = setup.session_resumption.handle if setup.session_resumption else None
        record = SetupRecord(
            raw=json.loads(raw)["setup"],
            model=setup.model or "",
            system_instruction=content_text(setup.system_instruction),
            function_names=functions,
            resumption_handle=handle,
            generation_config=(
                setup.generation_config.model_dump(mode="json", exclude_none=True)
                if setup.generation_config
                else {}
            ),
            realtime_input_config=ric.model_dump(mode="json", exclude_none=True) if ric else None,
            input_transcription=setup.input_audio_transcription is not None,
            output_transcription=setup.output_audio_transcription is not None,
        )
        self._vad = EnergyVad(
            frame_ms=self._cfg.vad_frame_ms,
            threshold_dbfs=start_dbfs,
            end_threshold_dbfs=end_dbfs,
            min_speech_ms=prefix_ms,
            silence_ms=silence_ms,
        )
        resumption = self._recorder.lookup_handle(handle) if handle else None
        self._replies.prompt_tokens = text_tokens(record.system_instruction)
        with self._out.mutate():
            self._rec.setup = record
            self._rec.vad_silence_ms = silence_ms
            self._rec.vad_prefix_ms = prefix_ms
            self._rec.vad_start_dbfs, self._rec.vad_end_dbfs = start_dbfs, end_dbfs
            self._rec.automatic_activity_detection = automatic
            self._rec.resumption = resumption
        log.info(
            "%s: setup model=%s functions=%s resumed=%s",
            self._rec.session_id,
            record.model,
            list(functions),
            resumption.resumed_session_id if resumption else None,
        )
        await self._out.send(types.LiveServerMessage(setup_complete=types.LiveServerSetupComplete()))
        await self.send_resumption_update()

    async def _on_realtime_input(self, ri: types.LiveClientRealtimeInput, at: float) -> None:
        if ri.audio is not None:
            await self._on_audio(ri.audio, at)
        elif ri.video is not None:
            self._on_video(ri.video, at)
        elif ri.media_chunks:
            for blob in ri.media_chunks:
                if (blob.mime_type or "").startswith("audio/"):
                    await self._on_audio(blob, at)
                elif (blob.mime_type or "").startswith("image/"):
                    self._on_video(blob, at)
        elif ri.activity_start is not None:
            self._manual_start = (self._rec.input_audio_ms, at)
            if self._replies.active and self._interrupts_on_activity:
                await self._replies.interrupt()
        elif ri.activity_end is not None:
            await self._end_speech("activity_end", at)
        elif ri.audio_stream_end:
            await self._end_speech("audio_stream_end", at)
        elif ri.text is not None:
            await self._start_text_turn([("user", ri.text)], "realtime_text", at)

    async def _on_audio(self, blob: types.Blob, at: float) -> None:
        data = blob.data or b""
        rate = mime_rate(blob.mime_type)
        if rate != INPUT_SAMPLE_RATE:
            self._out.error(f"audio chunk of {len(data)} bytes is {blob.mime_type!r}, not audio/pcm;rate=16000")
            return
        if len(data) % SAMPLE_WIDTH:
            self._out.error(f"audio chunk of odd length {len(data)} bytes (PCM16 has 2 bytes per sample)")
        with self._out.mutate():
            self._rec.audio_chunks.append(AudioChunk(at, len(self._rec.input_audio), len(data)))
            self._rec.input_audio += data
        if self._vad is None or not self._rec.automatic_activity_detection:
            return
        for event in self._vad.feed(data, at):
            await self._on_vad_event(event, "vad")

    def _on_video(self, blob: types.Blob, at: float) -> None:
        """A still frame of the caller's camera or screen: must be the image its type says."""
        data = blob.data or b""
        try:
            fmt, width, height, mean_rgb = read_image(data)
        except ProtocolError as e:
            self._out.error(str(e))
            return
        mime_type = blob.mime_type or ""
        if mime_type != f"image/{fmt.lower()}":
            self._out.error(f"video frame is {fmt} but its mime_type is {mime_type!r}")
        frame = VideoFrameRecord(at, mime_type, fmt, width, height, len(data), mean_rgb)
        with self._out.mutate():
            self._rec.video_frames.append(frame)
        self._replies.image_tokens += IMAGE_TOKENS_PER_FRAME
        self._replies.prompt_tokens += IMAGE_TOKENS_PER_FRAME
        log.debug("%s: video frame %dx%d %s, %d bytes", self._rec.session_id, width, height, fmt, len(data))

    async def _end_speech(self, reason: str, at: float) -> None:
        """activityEnd / audioStreamEnd: end the user's speech now, if any."""
        if self._vad is not None and self._rec.automatic_activity_detection:
            event = self._vad.flush(at)
            if event is not None:
                await self._on_vad_event(event, reason)
            return
        if self._manual_start is not None:
            start_ms, start_at = self._manual_start
            self._manual_start = None
            await self._start_audio_turn(
                VadEvent("start", start_ms, start_at, start_at),
                VadEvent("end", self._rec.input_audio_ms, at, at),
                reason,
            )

    async def _on_vad_event(self, event: VadEvent, reason: str) -> None:
        with self._out.mutate():
            self._rec.vad_events.append(event)
        if event.kind == "start":
            self._speech_start = event
            if self._cfg.answer_at_speech_start and not self._answered_early:
                # Answer now; the rest of this utterance is the same turn.
                self._answered_early = True
                await self._start_audio_turn(event, event, "speech_start")
            elif self._replies.active and self._interrupts_on_activity:
                await self._replies.interrupt()
        elif self._answered_early:
            self._answered_early, self._speech_start = False, None
        else:
            start, self._speech_start = self._speech_start or event, None
            await self._start_audio_turn(start, event, reason)

    async def _on_client_content(self, content: types.LiveClientContent, at: float) -> None:
        texts = [
            (turn.role or "user", part.text)
            for turn in content.turns or []
            for part in turn.parts or []
            if part.text
        ]
        self._pending_context.extend(texts)
        self._replies.prompt_tokens += sum(text_tokens(t) for _, t in texts)
        if content.turn_complete:
            contents, self._pending_context = self._pending_context, []
            await self._start_text_turn(contents, "client_content", at)

    # ---- turns and replies ------------------------------------------------------

    async def _start_audio_turn(self, start: VadEvent, end: VadEvent, reason: str) -> None:
        speech_s = max(0.0, end.audio_ms - start.audio_ms) / 1000.0
        description = f"({speech_s:.1f} s of speech)"
        turn = TurnRecord(
            index=len(self._rec.turns),
            kind="audio",
            text=description,
            end_reason=reason,
            end_declared_at=end.declared_at,
            speech_start_ms=start.audio_ms,
            speech_end_ms=end.audio_ms,
            speech_start_at=start.at,
            speech_end_at=end.at,
        )
        if self._replies.active:
            await self._replies.interrupt()
        with self._out.mutate():
            self._rec.turns.append(turn)
        log.info("%s: user turn %d ended (%s): %s", self._rec.session_id, turn.index, reason, description)
        self._pending_context.clear()
        self._replies.prompt_tokens += round(speech_s * AUDIO_TOKENS_PER_SECOND)
        if self._rec.setup and self._rec.setup.input_transcription:
            await self._out.send_content(input_transcription=types.Transcription(text=description, finished=True))
        turn_input = TurnInput(
            kind="audio", text=description, speech_s=speech_s, seen=last_seen(self._rec.video_frames, end.declared_at)
        )
        self._replies.begin(turn, turn_input)

    async def _start_text_turn(self, contents: list[tuple[str, str]], reason: str, at: float) -> None:
        if self._replies.active:
            await self._replies.interrupt()
        text = "\n".join(t for _, t in contents)
        user_texts = [t for role, t in contents if role == "user" and not _PLACEHOLDER_RE.match(t)]
        turn = TurnRecord(
            index=len(self._rec.turns),
            kind="text",
            text=text,
            end_reason=reason,
            end_declared_at=at,
            contents=list(contents),
        )
        with self._out.mutate():
            self._rec.turns.append(turn)
        log.info("%s: text turn %d: %r", self._rec.session_id, turn.index, text[:80])
        turn_input = TurnInput(
            kind="text", text=text, contents=tuple(contents), user_text=user_texts[-1] if user_texts else None,
            seen=last_seen(self._rec.video_frames, at),
        )
        self._replies.begin(turn, turn_input)

    # ---- outgoing ---------------------------------------------------------------

    async def send_resumption_update(self) -> None:
        """Send ``sessionResumptionUpdate`` with a new handle (after setup and each turn's end)."""
        handle = self._recorder.issue_handle(self._rec)
        update = types.LiveServerSessionResumptionUpdate(
            new_handle=handle,
            resumable=True,
            # Only sent for transparent resumption (types.LiveServerSessionResumptionUpdate).
            last_consumed_client_message_index=self._consumed_index if self._transparent_resumption else None,
        )
        await self._out.send(types.LiveServerMessage(session_resumption_update=update))

    async def go_away(self, time_left_s: float) -> None:
        """Send ``goAway{timeLeft}``, then close the connection (1000) when the time is up."""
        await self._out.send(
            types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left=f"{time_left_s:g}s"))
        )
        await asyncio.sleep(time_left_s)
        await self._conn.close(1000, "session ended after goAway")
