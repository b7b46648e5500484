"""Faults during real calls: the model link drops, is slow, refuses or cannot be reached.

Each test runs a whole call over real connections (LiveKit Python SDK caller -> real
livekit-server -> agent worker -> Gemini Live stand-in) and injects one fault. The stack,
the stand-in and the link between them are this module's own (`tests/e2e/faults.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.audio import synthesize
from tests.e2e.calls import (
    UTTERANCE,
    agent_lines,
    completed_audio_turns,
    greeted,
    wait_record,
    sessions_since,
    wait_sessions,
)
from tests.e2e.caller import AUDIBLE_DBFS, MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin
from tests.standins.slow_link import SlowLink
from tests.e2e.faults import fast_link, fault_link, fault_stack, fault_standin, healthy_standin  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

LONG_UTTERANCE = "Could you please tell me, slowly and clearly, what time it is right now in the city of Paris?"

# --- 1. the model link drops during a call --------------------------------------------------


@pytest.mark.parametrize("fault", ["close-1011", "tcp-reset", "go-away"])
async def test_model_link_fault_mid_reply_is_survived(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, fault: str
) -> None:
    standin = fault_standin
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        first = await greeted(caller, standin, started)
        spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
        # Fault as soon as the answer starts streaming.
        await wait_sessions(standin, started, lambda ss: any(t.kind == "audio" and t.first_audio_at for t in ss[0].turns))
        fault_at = time.monotonic()
        if fault == "go-away":
            await asyncio.to_thread(standin.go_away, first.session_id, time_left_s=25.0)
        else:
            await asyncio.to_thread(standin.disconnect, first.session_id, code=1011, abrupt=fault == "tcp-reset")
        sessions = await wait_sessions(standin, started, lambda ss: len(ss) >= 2 and ss[1].handles)
        await wait_sessions(standin, started, lambda ss: completed_audio_turns(ss), timeout=30)
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(fault_at + 0.5) is not None, 20, "agent audio after the fault"
        )
        await asyncio.sleep(1.0)
        sessions = sessions_since(standin, started)
        lines = agent_lines(caller)
        room = caller.room.name
        asked = {t.segment_id for t in caller.transcript_of(caller.identity) if t.final and t.text}

    first, second = sessions[0], sessions[1]
    # The question was asked once: the caller's transcript and the record show it once.
    assert len(asked) == 1, [t for t in caller.transcript_of(caller.identity)]
    record = await wait_record(fault_stack, room, lambda r: r["end_reason"] is not None)
    assert [t["role"] for t in record["turns"]].count("user") == 1, record["turns"]
    # The new connection resumed the old one with its latest handle.
    assert second.resumption is not None and second.resumption.known
    assert second.resumption.resumed_session_id == first.session_id
    assert second.resumption.handle == first.handles[-1]
    # The caller's question was answered exactly once, completely.
    assert len(completed_audio_turns(sessions)) == 1, [(s.session_id, s.turns) for s in sessions]
    if fault == "go-away":
        assert completed_audio_turns(sessions) == [(first.session_id, first.turns[-1].index)], "not cut by goAway"
        assert second.connected_at >= first.turns[-1].generation_complete_at
    else:
        assert first.turns[-1].turn_complete_at is None
        assert completed_audio_turns(sessions)[0][0] == second.session_id, "answered on the new connection"
    assert any("Europe/Paris" in line for line in lines), lines
    assert not any(err for s in sessions for err in s.errors), [s.errors for s in sessions]
    assert spoke_until > 0


async def test_a_drop_on_a_slow_link_replays_everything_the_handle_did_not_cover(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, fault_link: SlowLink
) -> None:
    """A resumption handle arrives while the caller speaks, over a 0.8 s round trip, and the
    link drops right after: what the server had not consumed when it issued the handle must
    be replayed on the new connection, with no gap."""
    standin = fault_standin
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        first = await greeted(caller, standin, started)
        fault_link.delay_s = 0.4
        await asyncio.sleep(4.0)  # the agent measures the slower round trip
        speak_at = time.monotonic()
        speaking = asyncio.create_task(caller.say(synthesize(LONG_UTTERANCE, MIC_SAMPLE_RATE)))
        await wait_sessions(standin, started,
                            lambda ss: any(e.kind == "start" and e.at > speak_at for e in ss[0].vad_events))
        await asyncio.sleep(1.0)  # well into the speech
        await asyncio.to_thread(standin.send_handle, first.session_id)
        await asyncio.sleep(0.6)  # the handle has reached the agent; audio after it is in flight
        await asyncio.to_thread(standin.disconnect, first.session_id, code=1011)
        await speaking
        sessions = await wait_sessions(standin, started, lambda ss: len(ss) >= 2 and ss[1].input_audio_ms > 500)
        fault_link.delay_s = 0.0
        await wait_sessions(standin, started, lambda ss: completed_audio_turns(ss), timeout=45)
    old, new = sessions[0], sessions[1]
    covered = old.handle_audio_bytes[old.handles.index(new.resumption.handle)]
    replayed_from = old.input_audio.find(bytes(new.input_audio[:3200]))
    print(f"\nslow link: the handle covered {covered / 32:.0f} ms of input audio; the replay starts at "
          f"{replayed_from / 32:.0f} ms")
    assert new.resumption is not None and new.resumption.handle == old.handles[-1]
    assert 0 <= replayed_from <= covered, "audio the handle did not cover was lost"


async def test_slow_reconnect_plays_the_filler(fault_stack: ProcessStack, fault_standin: GeminiLiveStandin) -> None:
    standin = fault_standin
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        first = await greeted(caller, standin, started)
        # The next three handshakes are refused (service restarting): ~2 s of backoff.
        standin.refuse_handshakes(503, count=3)
        dropped_at = time.monotonic()
        await asyncio.to_thread(standin.disconnect, first.session_id, code=1011)
        await wait_sessions(standin, started, lambda ss: len(ss) >= 2 and ss[1].handles, timeout=30)
        reconnected_at = time.monotonic()
        await caller.wait_until(lambda: any("One moment" in line for line in agent_lines(caller)), 10, "the filler line")
        heard = caller.agent_audio.first_audible_after(dropped_at + 0.9)
        # ... and the conversation goes on.
        spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(spoke_until) is not None, 30, "an answer after reconnecting"
        )
    assert heard is not None and heard < reconnected_at + 1.5, "the filler is heard while the model is away"
    assert [r.status for r in standin.rejected_handshakes[-3:]] == [503, 503, 503]


async def test_a_long_model_outage_is_never_silent_and_ends_with_a_spoken_apology(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    """The model is lost for good mid-call (every reconnect refused until the agent gives up,
    AGENT_MODEL_RETRY_GIVE_UP_S=30 here): the caller hears the filler again and again, reads
    that the agent is still trying, and hears why the call ends."""
    standin = fault_standin
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        first = await greeted(caller, standin, started)
        standin.refuse_handshakes(503)
        dropped_at = time.monotonic()
        await asyncio.to_thread(standin.disconnect, first.session_id, code=1011)
        await caller.wait_until(lambda: any("voice service was lost" in line for line in agent_lines(caller)),
                                90, "the call to end")
        ended_at = time.monotonic()
        await asyncio.sleep(1.0)
    lines = [t for t in caller.transcripts if t.identity != caller.identity and t.received_at > dropped_at]
    fillers = [t.received_at for t in lines if "One moment" in t.text]
    heard = [at for at, db in caller.agent_audio.levels if dropped_at < at < ended_at and db > AUDIBLE_DBFS]
    gaps = [b - a for a, b in zip(heard, heard[1:])]
    print(f"\nmodel lost for good: {len(fillers)} fillers, longest silence {max(gaps, default=0):.1f} s, "
          f"call ended {ended_at - dropped_at:.1f} s after the drop")
    assert len(fillers) >= 3, [t.text for t in lines]
    assert max(gaps) < 12.0, "no long silence while the agent retries"
    assert any("still trying" in t.text for t in lines)
    apology = [t for t in lines if "can't reach my voice service" in t.text]
    assert apology, [t.text for t in lines]
    assert any(apology[0].received_at - 1.0 < at for at in heard[-50:]), "the apology is spoken"


# --- 2. the model refuses or cannot be reached when the call starts ------------------------


async def test_bad_key_tells_the_caller_and_ends_the_job_without_a_crash_loop(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    standin = fault_standin
    standin.refuse_handshakes(401)
    refused_before = len(standin.rejected_handshakes)
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await caller.wait_until(lambda: any("credentials" in line for line in agent_lines(caller)), 30, "the refusal")
        await caller.wait_until(lambda: caller.agent_identity() is None, 30, "the agent to leave")
    assert len(standin.rejected_handshakes) - refused_before == 1, "a bad key is not retried"
    assert fault_stack.processes["agent"].poll() is None, "the worker keeps running"
    assert fault_stack.wait_for_log("agent", "Gemini Live unavailable: HTTP 401", 5)
    # Once the key is accepted again, the next call works.
    standin.accept_handshakes()
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)


@pytest.mark.parametrize("refusal", ["quota-429", "connection-refused"])
async def test_model_unavailable_at_start_is_retried_and_the_caller_told(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, refusal: str
) -> None:
    standin = fault_standin
    if refusal == "quota-429":
        standin.refuse_handshakes(429, count=2, retry_after_s=2)
    else:
        standin.stop()
    started = time.monotonic()
    try:
        async with Caller(fault_stack.token_url, name="Ada") as caller:
            await caller.wait_until(
                lambda: any("trying again" in line for line in agent_lines(caller)), 30, "the retrying line"
            )
            if refusal == "connection-refused":
                await asyncio.sleep(2.0)
                standin.start()
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 45, "the greeting")
            sessions = await wait_sessions(standin, started, lambda ss: ss and ss[0].turns)
    finally:
        if refusal == "connection-refused":
            with contextlib.suppress(RuntimeError):
                standin.start()
    assert "greet" in sessions[0].turns[0].text.lower()
    if refusal == "quota-429":
        rejected = [r for r in standin.rejected_handshakes if r.at >= started]
        assert [r.status for r in rejected] == [429, 429]
        assert sessions[0].connected_at - rejected[0].at >= 3.5, "Retry-After is honoured"
