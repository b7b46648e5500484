"""The stand-in's replies: a tool call if due, the reply text, its audio paced out with its
transcription, the turn's end and usage, and barge-in (``interrupted``).

Frame order per reply (as the real service sends it): [``toolCall``], ``modelTurn`` audio
chunks (24 kHz PCM16) with ``outputTranscription`` pieces interleaved, ``generationComplete``,
``turnComplete`` (held until the audio would have finished playing), ``usageMetadata``, then
whatever the session sends at a turn's end (a fresh ``sessionResumptionUpdate``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.genai import types
from websockets.exceptions import ConnectionClosed

from .config import StandinConfig, TurnInput
from .outbox import Outbox
from .protocol import AUDIO_TOKENS_PER_SECOND, OUTPUT_MIME_TYPE, OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH
from .records import TurnRecord
from .speech import speech_pcm, tone_pcm
from .tools import ToolCalls

log = logging.getLogger("gemini_live_standin")


@dataclass
class _ActiveReply:
    turn: TurnRecord
    task: asyncio.Task[None]
    tool_ids: list[str] = field(default_factory=list)


class Replies:
    """The replies of one session, one at a time, on the stand-in's event loop.

    Args:
        out: the session's connection and record.
        config: the stand-in's behaviour.
        tools: the session's function calls.
        on_turn_end: awaited after each reply's ``usageMetadata``.

    Attributes:
        prompt_tokens: tokens of context so far (system instruction, user turns, frames,
            replies), reported as ``usageMetadata.promptTokenCount``.
        image_tokens: the part of ``prompt_tokens`` that is video frames.
    """

    def __init__(
        self, out: Outbox, config: StandinConfig, tools: ToolCalls, on_turn_end: Callable[[], Awaitable[None]]
    ) -> None:
        self._out = out
        self._cfg = config
        self._tools = tools
        self._on_turn_end = on_turn_end
        self._reply: _ActiveReply | None = None
        self.prompt_tokens = 0
        self.image_tokens = 0

    @property
    def active(self) -> bool:
        """A reply is in flight (until its ``turnComplete``)."""
        return self._reply is not None and not self._reply.task.done()

    def begin(self, turn: TurnRecord, turn_input: TurnInput) -> None:
        """Start replying to ``turn`` (the previous reply must be over or interrupted)."""
        task = asyncio.get_running_loop().create_task(self._reply_flow(turn, turn_input))
        task.add_done_callback(self._reply_done)
        self._reply = _ActiveReply(turn, task)

    async def aclose(self) -> None:
        """Cancel the reply in flight, if any (the connection is gone or going)."""
        if self._reply is not None and not self._reply.task.done():
            self._reply.task.cancel()
            await asyncio.wait([self._reply.task])

    async def interrupt(self) -> None:
        """Barge-in: stop the reply in flight, then ``interrupted`` and ``turnComplete``."""
        reply = self._reply
        if reply is None or reply.task.done():
            return
        pending = self._tools.pending(reply.tool_ids)
        reply.task.cancel()
        await asyncio.wait([reply.task])
        await self._tools.cancel(pending)
        await self._out.send_content(interrupted=True)
        with self._out.mutate():
            reply.turn.interrupted = True
            reply.turn.interrupted_at = time.monotonic()
        log.info("%s: reply to turn %d interrupted", self._out.record.session_id, reply.turn.index)
        await self._finish_turn(
            reply.turn, response_tokens=round(reply.turn.reply_audio_ms / 1000 * AUDIO_TOKENS_PER_SECOND)
        )

    def _reply_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ConnectionClosed):
            log.error("%s: reply failed", self._out.record.session_id, exc_info=error)
            with self._out.mutate():
                self._out.record.errors.append(f"stand-in failure while replying: {error!r}")

    async def _reply_flow(self, turn: TurnRecord, turn_input: TurnInput) -> None:
        spec = self._cfg.tool_call
        setup = self._out.record.setup
        if turn.kind == "audio" and spec is not None and setup is not None and spec.name in setup.function_names:
            assert self._reply is not None
            output, error = await self._tools.call(turn, spec, self._reply.tool_ids)
            turn_input = dataclasses.replace(turn_input, tool_name=spec.name, tool_output=output, tool_error=error)
        if self._cfg.response_delay_ms:
            await asyncio.sleep(self._cfg.response_delay_ms / 1000.0)
        text = self._cfg.responder(turn_input)
        if self._cfg.reply_audio == "tone":
            audio = tone_pcm(len(text.split()))
        else:
            audio = await asyncio.to_thread(
                speech_pcm, text, OUTPUT_SAMPLE_RATE, self._cfg.espeak_voice, self._cfg.espeak_wpm
            )
        with self._out.mutate():
            turn.reply_text = text
        await self._speak(turn, text, audio)

    async def _speak(self, turn: TurnRecord, text: str, audio: bytes) -> None:
        """Send the reply: audio chunks with interleaved transcription, then the turn end."""
        chunk_bytes = OUTPUT_SAMPLE_RATE * self._cfg.reply_chunk_ms // 1000 * SAMPLE_WIDTH
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)] or [b""]
        words = text.split(" ")
        pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        chunk_s = self._cfg.reply_chunk_ms / 1000.0
        pacing = self._cfg.reply_pacing
        output_transcription = bool(self._out.record.setup and self._out.record.setup.output_transcription)
        start = time.monotonic()
        sent_pieces = 0
        for i, chunk in enumerate(chunks):
            if pacing > 0:
                delay = start + i * chunk_s / pacing - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            part = types.Part(inline_data=types.Blob(data=chunk, mime_type=OUTPUT_MIME_TYPE))
            await self._out.send_content(model_turn=types.Content(parts=[part]))
            with self._out.mutate():
                if turn.first_audio_at is None:
                    turn.first_audio_at = time.monotonic()
                turn.reply_audio_bytes += len(chunk)
            due = len(pieces) * (i + 1) // len(chunks)
            if output_transcription and due > sent_pieces:
                piece = "".join(pieces[sent_pieces:due])
                sent_pieces = due
                await self._out.send_content(output_transcription=types.Transcription(text=piece))
        await self._out.send_content(generation_complete=True)
        with self._out.mutate():
            turn.generation_complete_at = time.monotonic()
        if self._cfg.hold_turn_complete and turn.first_audio_at is not None:
            playback_end = turn.first_audio_at + len(audio) / (SAMPLE_WIDTH * OUTPUT_SAMPLE_RATE)
            await asyncio.sleep(max(0.0, playback_end - time.monotonic()))
        await self._finish_turn(
            turn,
            response_tokens=round(len(audio) / (SAMPLE_WIDTH * OUTPUT_SAMPLE_RATE) * AUDIO_TOKENS_PER_SECOND),
        )

    async def _finish_turn(self, turn: TurnRecord, response_tokens: int) -> None:
        await self._out.send_content(turn_complete=True)
        with self._out.mutate():
            turn.turn_complete_at = time.monotonic()
        prompt = self.prompt_tokens
        self.prompt_tokens += response_tokens
        prompt_details = (
            [types.ModalityTokenCount(modality=types.MediaModality.IMAGE, token_count=self.image_tokens)]
            if self.image_tokens
            else None
        )
        usage = types.UsageMetadata(
            prompt_token_count=prompt,
            response_token_count=response_tokens,
            total_token_count=prompt + response_tokens,
            prompt_tokens_details=prompt_details,
            response_tokens_details=[
                types.ModalityTokenCount(modality=types.MediaModality.AUDIO, token_count=response_tokens)
            ],
        )
        await self._out.send(types.LiveServerMessage(usage_metadata=usage))
        await self._on_turn_end()
