"""Faults during real calls: the model link drops or refuses, the worker is drained or killed.

Each test runs a whole call over real connections (LiveKit Python SDK caller -> real
livekit-server -> agent worker -> Gemini Live stand-in) and injects one fault. The stack
and the stand-in here are this module's own, so the faults do not disturb other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc

from tests.audio import synthesize
from tests.e2e.calls import (
    UTTERANCE,
    answered_once_more,
    ExtraWorker,
    extra_worker,
    agent_lines,
    completed_audio_turns,
    greeted,
    job_pid,
    load_record,
    wait_record,
    sessions_since,
    stall_event_loop,
    wait_sessions,
    wait_worker_ready,
    worker_pid,
    worker_stopped,
)
from tests.e2e.caller import AUDIBLE_DBFS, MIC_SAMPLE_RATE, Caller, TokenRefused, request_token
from tests.e2e.harness import ProcessStack, running_stack
from tests.fixtures import standin_fixture
from tests.standins.gemini_live import GeminiLiveStandin
from tests.standins.slow_link import SlowLink

pytestmark = pytest.mark.e2e

LONG_UTTERANCE = "Could you please tell me, slowly and clearly, what time it is right now in the city of Paris?"


fault_standin = standin_fixture("fault_standin", "module")


@pytest.fixture(scope="module")
def fault_link(fault_standin: GeminiLiveStandin) -> Iterator[SlowLink]:
    """The agent's network path to the model: no delay unless a test sets one."""
    with SlowLink(target_port=fault_standin.port) as link:
        yield link


@pytest.fixture(scope="module")
def fault_stack(
    fault_standin: GeminiLiveStandin, fault_link: SlowLink, tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[ProcessStack]:
    """A stack of this module's own (its agent is drained, killed and restarted here)."""
    extra = {
        "AGENT_MODEL_RETRY_GIVE_UP_S": "30",
        "AGENT_DRAIN_TIMEOUT_S": "25",  # a short grace period for the drain test
    }
    with running_stack(
        f"https://127.0.0.1:{fault_link.port}", str(fault_standin.ca_file), tmp_path_factory.mktemp("fault-state"),
        artifacts / "logs" / "faults", extra,
    ) as processes:
        # A worker registers before its idle job process is ready; on a busy machine the
        # first call would wait minutes for one, which no test here is about.
        processes.wait_for_log("agent", '"process initialized"', 300)
        yield processes


@pytest.fixture(autouse=True)
def fast_link(fault_link: SlowLink) -> Iterator[None]:
    """Every test starts and ends with an undelayed model link."""
    fault_link.delay_s = 0.0
    yield
    fault_link.delay_s = 0.0


@pytest.fixture(autouse=True)
def healthy_standin(fault_standin: GeminiLiveStandin) -> Iterator[None]:
    """Every test starts and ends with the stand-in serving normally."""
    fault_standin.accept_handshakes()
    yield
    fault_standin.accept_handshakes()


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


# --- 3. no worker takes the call -------------------------------------------------------------


@contextlib.contextmanager
def service_with(stack_: ProcessStack, name: str, **env: str) -> Iterator[None]:
    """Process `name` restarted with `env` added, then restarted as it was."""
    saved = dict(stack_.env)
    stack_.env.update(env)
    stack_.restart(name)
    try:
        yield
    finally:
        stack_.env.clear()
        stack_.env.update(saved)
        stack_.restart(name)


async def test_no_worker_the_caller_is_told_within_5_s_and_the_room_closed(fault_stack: ProcessStack) -> None:
    # Admission control admits the call on a dead worker's stale line (one): no worker takes it.
    with worker_stopped(fault_stack, ghost_lines=1):
        started = time.monotonic()
        async with Caller(fault_stack.token_url, name="Ada") as caller:
            await caller.wait_until(lambda: caller.notices, 10, "a notice")
            await caller.wait_until(lambda: caller.disconnect_reason is not None, 10, "the room to close")
            assert caller.agent_identity() is None
        # The refused call gave its admission line back: the next caller is admitted at once
        # (it would be refused 503 at_capacity for the whole join window otherwise).
        status, body = await asyncio.to_thread(request_token, fault_stack.token_url, {"participant_name": "Bob"})
        assert status == 201, body
    told_at, notice = caller.notices[0]
    print(f"\nno worker: caller told {told_at - started:.2f} s after asking for a token, "
          f"room closed {caller.disconnected_at - started:.2f} s after")
    assert told_at - started < 5.0, "told within 5 s"
    assert notice["code"] == "no_agent_available" and notice["closing"] is True
    assert "no assistant is available" in notice["message"]
    assert caller.disconnect_reason == "ROOM_DELETED"
    # One notice, from one place (it comes both as a data message and as the room's metadata).
    assert {n["code"] for _, n in caller.notices} == {"no_agent_available"}, caller.notices
    assert fault_stack.wait_for_log("token-server", "caller_told_no_agent", 5)


async def test_no_worker_and_admission_control_refuses_before_any_room(fault_stack: ProcessStack) -> None:
    """With no worker line left, the caller is refused before a room exists (no notice path)."""
    with worker_stopped(fault_stack):
        with pytest.raises(TokenRefused) as refused:
            async with Caller(fault_stack.token_url, name="Ada"):
                pass
    assert refused.value.status == 503 and refused.value.code == "at_capacity"


@pytest.mark.timeout(900)
async def test_a_call_that_starts_while_no_worker_is_registered_is_taken_when_one_registers(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    # A long notice window, so the worker has time to start (up to a minute on a busy box);
    # admission control off, or it would refuse the caller while no worker is registered.
    with service_with(fault_stack, "token-server", TOKEN_NO_AGENT_NOTICE_SECONDS="240",
                      TOKEN_AGENT_JOIN_TIMEOUT_SECONDS="300", TOKEN_ADMISSION_CONTROL="false"):
        fault_stack.stop("agent")
        started = time.monotonic()
        try:
            async with Caller(fault_stack.token_url, name="Ada") as caller:
                await asyncio.sleep(2)
                assert caller.agent_identity() is None
                # The worker comes back (registered again): it takes the call that was waiting.
                await asyncio.to_thread(fault_stack.start, ["agent"])
                # A job process may have to start first: a minute on a busy 2-core box.
                await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 120, "the greeting")
                assert not caller.notices
        finally:
            if fault_stack.processes["agent"].poll() is not None:
                fault_stack.start(["agent"])
    assert fault_stack.wait_for_log("token-server", "no_worker_redispatched", 5)


# --- 4. the worker is killed, drained, or doubled ------------------------------------------


async def test_killed_worker_is_replaced_and_the_call_picked_up(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    standin = fault_standin
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        await answered_once_more(caller, standin, started)
        await wait_sessions(standin, started, lambda ss: completed_audio_turns(ss))
        await asyncio.sleep(1.5)  # the answer's transcript reaches the record
        room = caller.room.name
        first_agent = caller.agent_identity()
        pid = worker_pid(fault_stack)
        killed_at = time.monotonic()
        os.killpg(pid, signal.SIGKILL)  # the worker and its job processes, as a crash would

        def new_agent() -> bool:
            identity = caller.agent_identity()
            return identity is not None and identity != first_agent

        await caller.wait_until(new_agent, 90, "a new agent in the room")
        assert [n["code"] for _, n in caller.notices] == ["agent_reconnecting"], "the caller is told"
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(killed_at + 0.5) is not None, 60, "the new agent's voice"
        )
        back_s = caller.agent_audio.first_audible_after(killed_at + 0.5) - killed_at
        print(f"\nworker SIGKILL -> agent audible again: {back_s:.1f} s")
        sessions = await wait_sessions(standin, killed_at, lambda ss: ss and ss[-1].turns)
        # ... and the conversation goes on with its context.
        await answered_once_more(caller, standin, started)
    await wait_worker_ready(fault_stack, pid)
    resumed = sessions[-1]
    context = " ".join(text for _, text in resumed.turns[0].contents)
    assert "Europe/Paris" in context, "the new agent knows the earlier answer (from the record)"
    assert "back" in resumed.turns[0].text and "greet" not in resumed.turns[0].text.lower()
    record = load_record(fault_stack, room)
    assert record["jobs"] == 2
    assert any(e.get("event") == "redispatched" for e in record["events"])


async def test_sigterm_drains_live_calls_then_hands_over(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    standin = fault_standin
    grace = float(fault_stack.env["AGENT_DRAIN_TIMEOUT_S"])
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        pid = worker_pid(fault_stack)
        first_agent = caller.agent_identity()
        os.kill(pid, signal.SIGTERM)
        termed_at = time.monotonic()
        assert fault_stack.wait_for_log("agent", "draining worker", 10)
        # The live call goes on while the worker drains ...
        await answered_once_more(caller, standin, started)
        # ... and a new call is not taken by the draining worker: its lines are withdrawn, so
        # the token server refuses the caller before any room exists (admission control).
        with pytest.raises(TokenRefused) as refused:
            async with Caller(fault_stack.token_url, name="Bob"):
                pass
        assert refused.value.status == 503 and refused.value.code == "at_capacity"
        assert worker_pid(fault_stack) == pid and caller.agent_identity() == first_agent
        # After the grace period the worker stops; its successor picks the call up.
        new_pid = await wait_worker_ready(fault_stack, pid, timeout=grace + 60)
        assert time.monotonic() - termed_at >= grace - 1
        await caller.wait_until(
            lambda: caller.agent_identity() not in (None, first_agent), 60, "the call handed to a new agent"
        )
        await answered_once_more(caller, standin, started)
    assert new_pid != pid
    assert "agent_reconnecting" in [n["code"] for _, n in caller.notices], "the caller is told at the cut"


async def test_one_agent_per_room_with_two_workers_and_a_repeated_dispatch(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    from livekit import api

    async with extra_worker(fault_stack, tmp_path / "second-worker.log"):
        started = time.monotonic()
        async with Caller(fault_stack.token_url, name="Ada") as caller:
            agents_seen: set[str] = set()
            caller.room.on(
                "participant_connected",
                lambda p: agents_seen.add(p.identity) if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT else None,
            )
            await greeted(caller, fault_standin, started)
            agents_seen.add(caller.agent_identity() or "")
            lk = api.LiveKitAPI(fault_stack.env["LIVEKIT_URL"], fault_stack.env["LIVEKIT_API_KEY"],
                                fault_stack.env["LIVEKIT_API_SECRET"])
            try:
                for _ in range(3):  # the dispatch, repeated
                    await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                        room=caller.room.name, agent_name=fault_stack.env["AGENT_NAME"], metadata="{}"))
            finally:
                await lk.aclose()
            await asyncio.sleep(6)
            agents_now = [p for p in caller.room.remote_participants.values()
                          if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT]
            await answered_once_more(caller, fault_standin, started)
        assert len(agents_now) == 1 and len(agents_seen) == 1, (agents_now, agents_seen)
        model_sessions = sessions_since(fault_standin, started)
        assert len(model_sessions) == 1, "only one agent talked to the model"


async def test_a_killed_worker_s_call_is_taken_by_the_other_live_worker(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    try:
        async with extra_worker(fault_stack, tmp_path / "second-worker.log") as second:
            await killed_worker_s_call_goes_to(second, fault_stack, fault_standin)
    finally:
        await wait_worker_ready(fault_stack, None)


async def killed_worker_s_call_goes_to(
    second: ExtraWorker, fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    """A call on one of two workers; the worker serving it is killed; the other takes it."""
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await greeted(caller, fault_standin, started)
        room, first_agent = caller.room.name, caller.agent_identity()
        serving = second.log if room in second.log.read_text(errors="replace") else fault_stack.log_dir / "agent.log"
        worker = os.getpgid(job_pid(serving, room))  # the worker's process group
        other = fault_stack.log_dir / "agent.log" if serving == second.log else second.log
        killed_at = time.monotonic()
        os.killpg(worker, signal.SIGKILL)  # the worker serving the call, and its jobs
        await caller.wait_until(lambda: caller.agent_identity() not in (None, first_agent), 60, "a new agent")
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(killed_at + 0.5) is not None, 30, "the agent's voice"
        )
        back_s = caller.agent_audio.first_audible_after(killed_at + 0.5) - killed_at
        assert room in other.read_text(errors="replace"), "the other, live worker took the call"
        await answered_once_more(caller, fault_standin, started)
    print(f"\nworker SIGKILL, another live worker -> agent audible again: {back_s:.1f} s")
    record = load_record(fault_stack, room)
    assert record["jobs"] == 2 and [e["why"] for e in record["events"] if e["event"] == "redispatched"] == ["gone"]


async def test_an_agent_whose_event_loop_stalls_keeps_its_call(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    """A busy box stalls a job's event loop past its room claim: the agent must not be evicted."""
    from voice_agent.settings import AgentSettings

    ttl_s = float(fault_stack.env.get("AGENT_ROOM_CLAIM_TTL_S") or AgentSettings.model_fields["room_claim_ttl_s"].default)
    started = time.monotonic()
    async with Caller(fault_stack.token_url, name="Ada") as caller:
        await greeted(caller, fault_standin, started)
        room, agent = caller.room.name, caller.agent_identity()
        pid = job_pid(fault_stack.log_dir / "agent.log", room)
        await asyncio.to_thread(stall_event_loop, pid, 1.5 * ttl_s)
        await answered_once_more(caller, fault_standin, started, timeout=60)
        assert caller.agent_identity() == agent, "the same agent goes on"
        assert not caller.notices
    record = load_record(fault_stack, room)
    assert record["jobs"] == 1 and not [e for e in record["events"] if e["event"] == "redispatched"], record["events"]
    assert len(sessions_since(fault_standin, started)) == 1, "one model session throughout"


async def test_after_the_last_handover_the_caller_is_told_and_the_room_closed(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin
) -> None:
    with service_with(fault_stack, "agent", AGENT_MAX_REDISPATCHES="0"):
        started = time.monotonic()
        async with Caller(fault_stack.token_url, name="Ada") as caller:
            await greeted(caller, fault_standin, started)
            room = caller.room.name
            pid = worker_pid(fault_stack)
            os.killpg(pid, signal.SIGKILL)  # restarted by its supervisor; no handover is left
            await caller.wait_until(lambda: caller.disconnect_reason is not None, 120, "the room to close")
        assert [n["code"] for _, n in caller.notices][-1:] == ["agent_unavailable"], caller.notices
        assert caller.notices[-1][1]["closing"] is True and caller.disconnect_reason == "ROOM_DELETED"
        record = load_record(fault_stack, room)
        assert record["end_reason"] == "agent lost too often"
