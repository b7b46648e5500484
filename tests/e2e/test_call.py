"""A whole call over real connections: token over HTTP, LiveKit SFU, agent worker, Gemini Live stand-in.

The caller is the LiveKit Python SDK (WebRTC, Opus at 48 kHz) talking to a real
livekit-server; the agent worker is the production code, pointed at the stand-in
through its base-URL setting. Nothing in the path is mocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
from livekit import api
import pytest

from tests.audio import envelope_correlation, synthesize
from tests.e2e.calls import TIME_TOOL_CALL
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import NO_CALLER_TIMEOUT_S, ProcessStack
from tests.standins.gemini_live import INPUT_SAMPLE_RATE, GeminiLiveStandin, SessionRecord

pytestmark = pytest.mark.e2e

UTTERANCE = "What time is it in Paris right now?"


def session_for(standin: GeminiLiveStandin, after: float) -> SessionRecord:
    """The stand-in session the agent opened for a call that joined at monotonic time `after`."""
    sessions = standin.wait_for(
        lambda all_: [s for s in all_ if s.connected_at >= after and s.setup is not None], timeout=20
    )
    return [s for s in sessions if s.connected_at >= after and s.setup is not None][0]


async def test_a_call_greets_listens_calls_a_tool_and_answers(
    native_stack: ProcessStack, standin: GeminiLiveStandin
) -> None:
    seen_live: dict[str, Any] = {}

    async def read_record_while_live(room: str) -> None:
        """Poll the record until the answer is in it (it is written when its playout ends)."""
        deadline = time.monotonic() + 20
        while not any("Europe/Paris" in t["text"] for t in seen_live.get("turns", []) if t["role"] == "assistant"):
            assert time.monotonic() < deadline, f"the answer never reached the record: {seen_live}"
            await asyncio.sleep(0.25)
            seen_live.update(await asyncio.to_thread(read_call_record, native_stack, room))

    room = await check_a_whole_call(native_stack.token_url, standin, during_call=read_record_while_live)

    # The agent recorded the call as it went (the answer was in it before hanging up), and the
    # records API serves it to operators.
    assert seen_live["open"] is True
    assert [t["name"] for t in seen_live["tool_calls"]] == [TIME_TOOL_CALL.name]
    assert "Europe/Paris" in str(seen_live["tool_calls"][0].get("output"))
    record = await asyncio.to_thread(read_call_record, native_stack, room)
    assert record["participant_name"] == "Ada"
    assert any(t["role"] == "user" and "speech" in t["text"] for t in record["turns"])
    assert record["usage"]["total_tokens"] > 0


def read_call_record(stack_: ProcessStack, room: str) -> dict[str, Any]:
    """GET /api/calls/<room> through the front door with the operators' records key."""
    request = urllib.request.Request(
        f"{stack_.web_url}/api/calls/{room}",
        headers={"Authorization": f"Bearer {stack_.env['RECORDS_API_KEYS']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def check_a_whole_call(
    token_url: str,
    standin: GeminiLiveStandin,
    during_call: Callable[[str], Awaitable[None]] | None = None,
) -> str:
    """One call through the token endpoint at `token_url`: greeting, a spoken question, a tool
    call and the answer, checked at the caller and at the model. Also run through the
    compose stack's HTTPS front door (tests/compose).

    Args:
        during_call: awaited with the room name once the answer has arrived, before hanging up.

    Returns:
        The call's room name.
    """
    speech = synthesize(UTTERANCE, MIC_SAMPLE_RATE)
    started = time.monotonic()
    async with Caller(token_url, name="Ada") as caller:
        agent_identity = caller.agent_identity

        # The agent joins by itself (dispatched by the token) and greets first.
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 30, "the greeting's audio")
        session = session_for(standin, started)
        assert "get_current_time" in session.setup.function_names
        assert "lookup_faq" in session.setup.function_names
        greeting = session.turns[0]
        assert greeting.kind == "text" and "Ada" in greeting.text, "greeting not personalised"
        await caller.wait_until(
            lambda: any("Hello" in t.text for t in caller.transcript_of(agent_identity() or "")),
            10,
            "the greeting in the transcript",
        )
        # Let the greeting finish playing before speaking.
        standin.wait_for(lambda s: [x for x in s if x.session_id == session.session_id and x.turns[0].turn_complete_at], 20)

        audio_before = len(caller.agent_audio.levels)
        spoke_until = await caller.say(speech)

        # The stand-in's VAD saw one spoken turn; the tool call made the round trip.
        def answered(all_: list[SessionRecord]) -> bool:
            s = next(x for x in all_ if x.session_id == session.session_id)
            return any(t.kind == "audio" and t.first_audio_at for t in s.turns)

        standin.wait_for(answered, timeout=30)
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(spoke_until) is not None, 15, "the answer's audio"
        )
        await caller.wait_until(
            lambda: any("Europe/Paris" in t.text for t in caller.transcript_of(agent_identity() or "")),
            15,
            "the answer in the transcript",
        )
        await caller.wait_until(
            lambda: any(t.final and "speech" in t.text for t in caller.transcript_of(caller.identity)),
            15,
            "the caller's own speech in the transcript",
        )
        room = str(caller.token["room_name"])
        if during_call is not None:
            await during_call(room)

    session = next(s for s in standin.sessions if s.session_id == session.session_id)
    assert not session.errors, session.errors

    # 1. The model received the caller's speech as 16 kHz PCM16 with the same energy envelope.
    audio_frames = session.messages_of("realtime_input.audio")
    assert audio_frames and all(
        m.message.realtime_input.audio.mime_type == f"audio/pcm;rate={INPUT_SAMPLE_RATE}" for m in audio_frames
    )
    received = np.frombuffer(bytes(session.input_audio), dtype=np.int16)
    correlation = envelope_correlation(speech, MIC_SAMPLE_RATE, received, INPUT_SAMPLE_RATE)
    assert correlation > 0.9, f"speech envelope correlation {correlation:.2f}"
    audio_turns = [t for t in session.turns if t.kind == "audio"]
    assert len(audio_turns) == 1, [t.text for t in session.turns]
    spoken_s = len(speech) / MIC_SAMPLE_RATE
    assert abs(audio_turns[0].speech_end_ms - audio_turns[0].speech_start_ms - spoken_s * 1000) < 600

    # 2. A tool call made the round trip: issued by the model, run by the agent, answered by id.
    [call] = session.tool_calls
    assert (call.name, call.args) == (TIME_TOOL_CALL.name, TIME_TOOL_CALL.args)
    assert call.error is None and call.response is not None
    assert "Europe/Paris" in str(call.response)
    assert [r.id for r in session.tool_responses if r.matched] == [call.id]

    # 3. The caller heard the agent: the greeting, then the answer after it spoke.
    assert caller.agent_audio.audible_seconds() > 2.0
    assert any(db > -45 for _, db in caller.agent_audio.levels[audio_before:])

    # 4. Transcripts arrived as text streams for both sides.
    assert any(t.final for t in caller.transcript_of(caller.identity))
    return room


async def test_a_job_whose_caller_never_joins_ends_cleanly(native_stack: ProcessStack) -> None:
    """Dispatched for a caller who never comes: the agent joins, waits, then leaves by itself."""
    env = native_stack.env
    room = f"room-nobody-{time.monotonic_ns()}"
    async with api.LiveKitAPI(env["LIVEKIT_URL"].replace("ws", "http", 1), env["LIVEKIT_API_KEY"],
                              env["LIVEKIT_API_SECRET"]) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=120))
        await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            room=room, agent_name=env["AGENT_NAME"],
            metadata=json.dumps({"participant_identity": "nobody", "participant_name": None}),
        ))

        async def agents_in_room() -> int:
            listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            return sum(p.kind == api.ParticipantInfo.Kind.AGENT for p in listing.participants)

        deadline = time.monotonic() + 20
        while await agents_in_room() == 0:
            assert time.monotonic() < deadline, "the agent never joined the room"
            await asyncio.sleep(0.2)
        joined = time.monotonic()
        while await agents_in_room() > 0:
            assert time.monotonic() - joined < NO_CALLER_TIMEOUT_S + 10, "the agent did not leave"
            await asyncio.sleep(0.2)
        waited = time.monotonic() - joined
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    assert waited > NO_CALLER_TIMEOUT_S - 1, f"left after {waited:.1f} s, before its timeout"
    assert native_stack.wait_for_log("agent", f"no caller joined within {NO_CALLER_TIMEOUT_S} s")


@pytest.fixture
def burst_replies(standin: GeminiLiveStandin) -> Iterator[None]:
    """Send each reply's audio at once, as fast as the socket allows (the real service also
    runs ahead of real time): the agent then holds seconds of audio it must drop on barge-in."""
    config = standin.config
    standin.config = dataclasses.replace(config, reply_pacing=0)
    yield
    standin.config = config


@pytest.mark.usefixtures("burst_replies")
async def test_barge_in_stops_the_agent_mid_reply(native_stack: ProcessStack, standin: GeminiLiveStandin) -> None:
    """Speaking over the agent cuts its reply short: the model says `interrupted`, and the agent
    drops the reply audio it already had instead of playing it over the caller."""
    question = synthesize(UTTERANCE, MIC_SAMPLE_RATE)
    interruption = synthesize("Stop. Wait a moment please, I have another question.", MIC_SAMPLE_RATE)
    started = time.monotonic()
    async with Caller(native_stack.token_url, name="Barge") as caller:
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 30, "the greeting's audio")
        session_id = session_for(standin, started).session_id
        standin.wait_for(lambda s: [x for x in s if x.session_id == session_id and x.turns[0].turn_complete_at], 20)

        spoke_until = await caller.say(question)
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(spoke_until) is not None, 20, "the answer's audio"
        )
        barge_at = time.monotonic()
        barge_until = await caller.say(interruption)
        quiet_from = barge_at + 1.0

    session = next(s for s in standin.sessions if s.session_id == session_id)
    answer = next(t for t in session.turns if t.kind == "audio")
    assert answer.interrupted, "the model never saw the barge-in"
    # Once the interruption reached the agent, the caller heard (almost) nothing of the old reply.
    heard = [db for at, db in caller.agent_audio.levels if quiet_from <= at <= barge_until]
    audible = sum(1 for db in heard if db > -45)
    assert heard and audible / len(heard) < 0.05, f"{audible}/{len(heard)} frames of agent audio over the caller"
    # ... although the model had sent all of it, and it ran well past the interruption.
    assert answer.reply_audio_ms / 1000 > barge_until - barge_at + 1.0, "the reply was too short to interrupt"
