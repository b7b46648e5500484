"""Faults during real calls: no worker takes the call, or the worker is killed, drained,
stalled or doubled.

Each test runs a whole call over real connections (LiveKit Python SDK caller -> real
livekit-server -> agent worker -> Gemini Live stand-in) and injects one fault. The stack
and the stand-in are this module's own (`tests/e2e/faults.py`).
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

from tests.e2e.calls import (
    answered_once_more,
    ExtraWorker,
    extra_worker,
    completed_audio_turns,
    greeted,
    job_pid,
    load_record,
    sessions_since,
    stall_event_loop,
    wait_sessions,
    wait_worker_ready,
    worker_pid,
    worker_stopped,
)
from tests.e2e.caller import Caller, TokenRefused, request_token
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin
from tests.e2e.faults import fast_link, fault_link, fault_stack, fault_standin, healthy_standin  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


# --- 1. no worker takes the call -------------------------------------------------------------


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


async def test_without_gemini_credentials_the_call_ends_at_once_saying_why(fault_stack: ProcessStack) -> None:
    """A first run before `.env` has credentials: the agent ends the call with a closing notice
    that says why (the page shows it, instead of waiting for an agent that will not come)."""
    with service_with(fault_stack, "agent", GOOGLE_API_KEY=""):
        async with Caller(fault_stack.token_url, name="Ada") as caller:
            await caller.wait_until(lambda: caller.disconnect_reason is not None, 30, "the call to end")
        # (a closing notice comes twice: as a data message and as the room's metadata)
        assert {n["code"] for _, n in caller.notices} == {"agent_not_configured"}, caller.notices
        assert "Gemini credentials" in caller.notices[-1][1]["message"]
        assert caller.notices[-1][1]["closing"] is True and caller.disconnect_reason == "ROOM_DELETED"
    assert fault_stack.wait_for_log("agent", "cannot answer the call", 5)


# --- 2. the worker is killed, drained, or doubled ------------------------------------------


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
