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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc

from scripts import stack
from tests.audio import synthesize
from tests.conftest import TIME_TOOL_CALL
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller, TokenRefused
from tests.e2e.harness import ProcessStack, free_port, running_stack
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord, StandinConfig

pytestmark = pytest.mark.e2e

UTTERANCE = "What time is it in Paris right now?"


@pytest.fixture(scope="module")
def fault_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiLiveStandin]:
    server = GeminiLiveStandin(
        StandinConfig(tool_call=TIME_TOOL_CALL), cert_dir=tmp_path_factory.mktemp("fault-standin-certs")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_stack(
    fault_standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[ProcessStack]:
    """A stack of this module's own (its agent is drained, killed and restarted here)."""
    extra = {
        "AGENT_MODEL_RETRY_GIVE_UP_S": "30",
        "AGENT_DRAIN_TIMEOUT_S": "25",  # a short grace period for the drain test
    }
    with running_stack(
        fault_standin.base_url, str(fault_standin.ca_file), tmp_path_factory.mktemp("fault-state"),
        artifacts / "logs" / "faults", extra,
    ) as processes:
        yield processes


@pytest.fixture(autouse=True)
def healthy_standin(fault_standin: GeminiLiveStandin) -> Iterator[None]:
    """Every test starts and ends with the stand-in serving normally."""
    fault_standin.accept_handshakes()
    yield
    fault_standin.accept_handshakes()


def sessions_since(standin: GeminiLiveStandin, after: float) -> list[SessionRecord]:
    return [s for s in standin.sessions if s.connected_at >= after]


async def wait_sessions(
    standin: GeminiLiveStandin, after: float, predicate: object, timeout: float = 30.0
) -> list[SessionRecord]:
    """Wait until `predicate(sessions opened since after)` holds; returns those sessions."""

    def check(all_: list[SessionRecord]) -> bool:
        return bool(predicate([s for s in all_ if s.connected_at >= after]))  # type: ignore[operator]

    await asyncio.to_thread(standin.wait_for, check, timeout)
    return sessions_since(standin, after)


def agent_lines(caller: Caller) -> list[str]:
    """Every transcript line not spoken by the caller (agents that left included)."""
    return [t.text for t in caller.transcripts if t.identity != caller.identity]


async def greeted(caller: Caller, standin: GeminiLiveStandin, started: float) -> SessionRecord:
    """Wait for the greeting to be heard and finish; returns the call's model session."""
    await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 45, "the greeting's audio")
    sessions = await wait_sessions(standin, started, lambda ss: ss and ss[0].turns and ss[0].turns[0].turn_complete_at)
    await asyncio.sleep(0.5)
    return sessions[0]


def completed_audio_turns(sessions: list[SessionRecord]) -> list[tuple[str, int]]:
    return [(s.session_id, t.index) for s in sessions for t in s.turns if t.kind == "audio" and t.turn_complete_at]


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

    first, second = sessions[0], sessions[1]
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


# --- 3. the worker is killed, drained, or doubled ------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def worker_pid(stack_: ProcessStack) -> int:
    """The agent worker's main process (supervisord's child running `voice_agent`)."""
    todo = [stack_.processes["agent"].pid]
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"voice_agent" in cmdline and b"supervisord" not in cmdline:
            return pid
        todo.extend(_children(pid))
    raise LookupError("no worker process")


async def wait_worker_ready(stack_: ProcessStack, old_pid: int | None, timeout: float = 60.0) -> int:
    """Wait for a (new) registered worker; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(LookupError):
            pid = worker_pid(stack_)
            if pid != old_pid and stack_.checks["agent"].probe():
                return pid
        await asyncio.sleep(0.2)
    raise AssertionError(f"no new worker within {timeout} s:\n{stack_.log_tail('agent')}")


def load_record(stack_: ProcessStack, room: str) -> dict:
    import redis as sync_redis

    from token_server.records import load_session

    client = sync_redis.Redis.from_url(stack_.env["REDIS_URL"], decode_responses=True)
    try:
        return load_session(client, room) or {}
    finally:
        client.close()


async def answered_once_more(caller: Caller, standin: GeminiLiveStandin, started: float, timeout: float = 30) -> None:
    spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
    await caller.wait_until(
        lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, timeout, "an answer"
    )


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

        await caller.wait_until(new_agent, 60, "a new agent in the room")
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(killed_at + 0.5) is not None, 30, "the new agent's voice"
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
    assert back_s < 30


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


async def test_one_agent_per_room_with_two_workers_and_a_repeated_dispatch(
    fault_stack: ProcessStack, fault_standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    from livekit import api

    env = dict(fault_stack.env)
    env["AGENT_HEALTH_PORT"] = str(free_port())
    env["AGENT_READY_FILE"] = str(tmp_path / "second.ready")
    log = open(tmp_path / "second-worker.log", "wb")  # noqa: SIM115
    second = subprocess.Popen([sys.executable, "-m", "voice_agent", "start"], cwd=stack.ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if Path(env["AGENT_READY_FILE"]).exists():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the second worker did not register")
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
    finally:
        second.terminate()
        second.wait(30)
        log.close()
