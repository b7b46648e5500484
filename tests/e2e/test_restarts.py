"""The services around the agent restart, or the caller's network drops, during real calls.

Redis and livekit-server are restarted under a stack of this module's own (the session's
`native_stack` is left alone), with the Gemini Live stand-in as the model, the LiveKit
Python SDK as the caller and real connections throughout. Recovery figures are printed
(`pytest -s` shows them).

What livekit-server 1.13.5 does, as these tests found it:

* Redis away: media keeps flowing (the call goes on, the agent answers), but the signalling
  that livekit-server relays through Redis breaks, during the outage or just after it, and
  joins are refused (HTTP 500) until its Redis client is back. The SDKs' resume then fails
  and they rejoin in full; when the agent's participant is replaced by its own rejoin,
  livekit-server ends the agent's job (`AGENT_LEFT_ROOM`), and the watchdog hands the call
  to a new job that picks it up from the record. Whether that happens depends on timing,
  so the Redis test accepts either path and checks the record and the answer.
* livekit-server restarted: rooms live in its memory, so resume fails, but both SDKs rejoin
  in full a new room of the same name (rooms are created on join); the agent's job survives
  (the new server knows nothing of it to end), and the same model session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc

from scripts import stack
from tests.audio import synthesize
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller, request_token
from tests.e2e.calls import (
    agent_lines,
    completed_audio_turns,
    greeted,
    load_record,
    sessions_since,
    wait_record,
    wait_sessions,
    worker_pid,
)
from tests.e2e.harness import ProcessStack, isolated_overrides
from tests.e2e.calls import UTTERANCE
from tests.fixtures import standin_fixture
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord

pytestmark = pytest.mark.e2e


restart_standin = standin_fixture("restart_standin", "module")


@pytest.fixture(scope="module")
def restart_stack(
    restart_standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[ProcessStack]:
    """A stack of this module's own: its Redis and livekit-server are restarted here.

    Started again on other ports if a port picked free was taken before its service bound
    it (`free_port` picks from the range outgoing connections take their ports from, and
    this module runs late in a busy session).
    """
    for attempt in (1, 2, 3):
        overrides = isolated_overrides(
            tmp_path_factory.mktemp("restart-state"), restart_standin.base_url, str(restart_standin.ca_file)
        )
        processes = ProcessStack(stack.build_env(env_file=None, overrides=overrides), log_dir / "restarts")
        try:
            processes.start()
            break
        except RuntimeError:
            processes.close()
            if attempt == 3:
                raise
    try:
        yield processes
    finally:
        processes.close()


def roles(record: dict[str, Any]) -> list[str]:
    return [t["role"] for t in record["turns"]]


def lifecycle(record: dict[str, Any]) -> list[str]:
    return [e["event"] for e in record["events"]]


def registrations(stack_: ProcessStack) -> int:
    """How many times the agent worker has registered with LiveKit (from its log)."""
    return (stack_.log_dir / "agent.log").read_text(errors="replace").count('"registered worker"')


async def ask(caller: Caller, standin: GeminiLiveStandin, started: float, timeout: float = 45.0) -> float:
    """Ask the question and wait until its answer has been heard to its end (nobody talks
    over it); returns when the answer was first heard (monotonic)."""
    answered_before = len(completed_audio_turns(sessions_since(standin, started)))
    spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
    await caller.wait_until(
        lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, timeout, "an answer"
    )
    heard_at = caller.agent_audio.first_audible_after(spoke_until + 0.3)
    await wait_sessions(standin, started, lambda ss: len(completed_audio_turns(ss)) > answered_before, timeout)
    await asyncio.sleep(1.0)  # the answer's transcript reaches the agent, then the record
    return heard_at  # type: ignore[return-value]


def track_states(caller: Caller) -> list[tuple[float, str]]:
    """The caller's connection states from now on, with their times (monotonic)."""
    states: list[tuple[float, str]] = []
    caller.room.on("connection_state_changed", lambda s: states.append((time.monotonic(), rtc.ConnectionState.Name(s))))
    return states


async def a_new_call_works(stack_: ProcessStack, standin: GeminiLiveStandin) -> None:
    """A fresh call end to end: token, room, dispatch, greeting, a spoken question answered
    through the tool by the model, and its record in Redis."""
    started = time.monotonic()
    async with Caller(stack_.token_url, name="Bea") as caller:
        room = caller.room.name
        await greeted(caller, standin, started)
        await ask(caller, standin, started)
        await caller.wait_until(
            lambda: any("Europe/Paris" in line for line in agent_lines(caller)), 20, "the answer in the transcript"
        )
    record = await wait_record(stack_, room, lambda r: r["end_reason"] is not None and len(r["turns"]) >= 3)
    assert record["participant_name"] == "Bea" and record["end_reason"] == "caller left"
    assert record["tool_calls"] and "Europe/Paris" in str(record["tool_calls"][0]["output"])


# --- Redis restarts mid-call -----------------------------------------------------------------


async def ask_until_answered(
    caller: Caller, standin: GeminiLiveStandin, started: float, timeout: float = 90.0
) -> int:
    """Ask, and ask again while the model does not start an answer (as a caller who was not
    heard does); wait until the answer has played; returns how many times it was asked."""
    deadline = time.monotonic() + timeout
    for attempt in itertools.count(1):
        sessions = sessions_since(standin, started)
        started_before, answered_before = len(audio_answers_started(sessions)), len(completed_audio_turns(sessions))
        await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
        try:
            await wait_sessions(standin, started, lambda ss: len(audio_answers_started(ss)) > started_before, 12)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            continue
        await wait_sessions(standin, started, lambda ss: len(completed_audio_turns(ss)) > answered_before, 45)
        await asyncio.sleep(1.0)  # the answer's transcript reaches the agent, then the record
        return attempt
    raise AssertionError("unreachable")


def audio_answers_started(sessions: list[SessionRecord]) -> list[tuple[str, int]]:
    """Spoken turns whose answer has started streaming."""
    return [(s.session_id, t.index) for s in sessions for t in s.turns if t.kind == "audio" and t.first_audio_at]


async def probe_join(env: dict[str, str]) -> bool:
    """Whether livekit-server lets a participant join a room now (no agent is dispatched)."""
    token = (
        api.AccessToken(env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        .with_identity(f"probe-{time.monotonic_ns()}")
        .with_grants(api.VideoGrants(room_join=True, room="restart-probe"))
        .to_jwt()
    )
    room = rtc.Room()
    try:
        await asyncio.wait_for(room.connect(env["LIVEKIT_URL"], token), 10)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await room.disconnect()


async def test_redis_restart_mid_call_loses_nothing_and_the_services_reconnect(
    restart_stack: ProcessStack, restart_standin: GeminiLiveStandin, caplog: pytest.LogCaptureFixture
) -> None:
    standin = restart_standin
    env = restart_stack.env
    claim_s = float(env.get("AGENT_ROOM_CLAIM_TTL_S") or 4.0)
    caplog.set_level(logging.WARNING, logger="livekit")
    started = time.monotonic()
    async with Caller(restart_stack.token_url, name="Ada") as caller:
        states = track_states(caller)
        room = caller.room.name
        await greeted(caller, standin, started)
        await ask(caller, standin, started)
        before = await wait_record(restart_stack, room, lambda r: len(r["turns"]) >= 3)

        down_at = time.monotonic()
        await asyncio.to_thread(restart_stack.stop, "redis")
        stopped_s = time.monotonic() - down_at
        # While Redis is away the token server refuses at once, and the call goes on (media
        # does not pass through Redis): the same agent answers; its record waits in memory.
        status, body = await asyncio.to_thread(request_token, restart_stack.token_url, {})
        assert status == 503 and body["error"]["code"] == "storage_unavailable", (status, body)
        await ask(caller, standin, started)
        assert len(sessions_since(standin, started)) == 1
        # Away for longer than the agent's claim on the room lives: it must take it again.
        await asyncio.sleep(max(0.0, down_at + claim_s + 2.0 - time.monotonic()))
        start_at = time.monotonic()
        await asyncio.to_thread(restart_stack.start, ["redis"])
        up_at = time.monotonic()

        # The token server issues tokens again as soon as Redis answers ...
        while True:
            status, body = await asyncio.to_thread(request_token, restart_stack.token_url, {})
            if status == 201 or time.monotonic() - up_at > 15:
                break
            await asyncio.sleep(0.1)
        tokens_again_s = time.monotonic() - up_at
        assert status == 201, (status, body)
        # ... livekit-server takes joins again once its own Redis client is back ...
        while not await probe_join(env):
            assert time.monotonic() - up_at < 60, "livekit-server refused joins for a minute"
            await asyncio.sleep(0.5)
        joins_again_s = time.monotonic() - up_at

        # ... and the call goes on: the caller is answered (asking again if not heard while
        # the signalling reconnected).
        asked = await ask_until_answered(caller, standin, started)
        answered_s = time.monotonic() - up_at
        states_in_call = [(round(t - up_at, 1), s) for t, s in states]
    sdk = [r.getMessage().split(" - ", 1)[-1][:90] for r in caplog.records if "connection" in r.getMessage()]
    print(f"\nredis restart: SIGTERM->exited {stopped_s:.2f} s, start->PONG {up_at - start_at:.2f} s, "
          f"away {up_at - down_at:.1f} s (held down by the test); after Redis was back: tokens issued "
          f"{tokens_again_s:.2f} s, livekit-server joins {joins_again_s:.1f} s, call answered {answered_s:.1f} s "
          f"(asked {asked}x); caller states {states_in_call}; caller SDK: {sdk}")

    after = await wait_record(restart_stack, room, lambda r: r["end_reason"] is not None)
    print("record:", after["jobs"], "job(s);", [(e["event"], e.get("reason")) for e in after["events"]])
    assert after["turns"][: len(before["turns"])] == before["turns"], "nothing recorded before was lost"
    outage = after["turns"][len(before["turns"]) : len(before["turns"]) + 2]
    assert [t["role"] for t in outage] == ["user", "assistant"] and outage[1]["text"], (
        "the turn taken while Redis was away was recorded"
    )
    if after["jobs"] == 1:  # otherwise its answer is recorded as far as it played before the job ended
        assert "Europe/Paris" in outage[1]["text"], outage
    assert after["turns"][-1]["role"] == "assistant" and "Europe/Paris" in after["turns"][-1]["text"]
    assert all(t["text"] for t in after["turns"]) and len(after["tool_calls"]) >= 3
    assert after["end_reason"] == "caller left" and after["usage"]["total_tokens"] > 0
    sessions = sessions_since(standin, started)
    events = lifecycle(after)
    if after["jobs"] == 1:
        # The agent's claim on the room expired while Redis was away and was taken again.
        assert "redispatched" not in events and len(sessions) == 1
    else:
        # livekit-server ended the job when the agent's signalling reconnected in full (see
        # the module notes); the watchdog handed the call to a new job, which picked it up.
        assert after["jobs"] == 2 and events.count("redispatched") == 1, after["events"]
        assert "Europe/Paris" in " ".join(text for _, text in sessions[-1].turns[0].contents)

    # livekit-server keeps its node and room state in the same Redis: new calls work too.
    await a_new_call_works(restart_stack, standin)


async def test_redis_refusing_writes_mid_call_loses_nothing_and_alerts(
    restart_stack: ProcessStack, restart_standin: GeminiLiveStandin
) -> None:
    """Redis full (maxmemory, noeviction: OOM) during a turn: the turn is written once it has room."""
    import redis as sync_redis

    admin = sync_redis.Redis.from_url(restart_stack.env["REDIS_URL"], decode_responses=True)
    started = time.monotonic()
    try:
        async with Caller(restart_stack.token_url, name="Ada") as caller:
            room = caller.room.name
            await greeted(caller, restart_standin, started)
            await wait_record(restart_stack, room, lambda r: len(r["turns"]) >= 1)
            limit = admin.config_get("maxmemory")["maxmemory"]
            admin.config_set("maxmemory", "1")  # every write is refused with OOM from now
            try:
                await ask(caller, restart_standin, started)
                await asyncio.sleep(1.0)
                during = await asyncio.to_thread(load_record, restart_stack, room)
            finally:
                admin.config_set("maxmemory", limit)
            record = await wait_record(restart_stack, room, lambda r: len(r["turns"]) >= 3)
    finally:
        admin.close()
    assert len(during["turns"]) == 1, "nothing could be written while Redis refused"
    assert [t["role"] for t in record["turns"]][:3] == ["assistant", "user", "assistant"]
    assert "Europe/Paris" in record["turns"][2]["text"], "the turn taken while Redis refused writes"
    assert restart_stack.wait_for_log("agent", "call records cannot be written", 5)
    # livekit-server could not refresh its node's stats in Redis either ("could not find any
    # available nodes" for a new participant until it does): new callers get in again.
    deadline = time.monotonic() + 30
    while not await probe_join(restart_stack.env):
        assert time.monotonic() < deadline, "livekit-server still refuses new participants"
        await asyncio.sleep(0.5)


# --- the caller's network drops and comes back ------------------------------------------------


async def test_caller_network_drop_and_return_within_the_departure_timeout_continues_the_call(
    restart_stack: ProcessStack, restart_standin: GeminiLiveStandin
) -> None:
    standin = restart_standin
    env = restart_stack.env
    started = time.monotonic()
    log_path = restart_stack.log_dir / "vanishing-caller.log"
    log = open(log_path, "ab")  # noqa: SIM115
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.vanishing_caller", restart_stack.token_url, "Ada", UTTERANCE,
        cwd=stack.ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
    )
    try:
        progress: dict[str, dict[str, Any]] = {}
        while "answered" not in progress:
            line = await asyncio.wait_for(process.stdout.readline(), 120)  # type: ignore[union-attr]
            assert line, f"the caller process ended:\n{log_path.read_text(errors='replace')[-3000:]}"
            event = json.loads(line)
            progress[event["event"]] = event
        room, identity = progress["joined"]["room"], progress["joined"]["identity"]
        [session] = await wait_sessions(standin, started, completed_audio_turns)

        # The network drops: nothing leaves the caller's machine any more (no leave message).
        os.kill(process.pid, signal.SIGSTOP)
        dropped_at = time.monotonic()
        record = await wait_record(restart_stack, room, lambda r: "caller_dropped" in lifecycle(r), timeout=60)
        noticed_s = time.monotonic() - dropped_at
        drop = next(e for e in record["events"] if e["event"] == "caller_dropped")
        await asyncio.sleep(5.0)  # away a while: the room and the agent wait
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)  # that connection never comes back
        await process.wait()
        log.close()

    # The caller's client reconnects to the same room as the same participant (what a client's
    # full reconnect does; the token endpoint always opens a new room, so the token is minted here).
    token = (
        api.AccessToken(env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        .with_identity(identity)
        .with_name("Ada")
        .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                     can_publish_data=True))
        .to_jwt()
    )
    answer = {"server_url": progress["joined"]["server_url"], "participant_token": token,
              "participant_identity": identity}
    async with Caller(restart_stack.token_url, name="Ada", token=answer) as caller:
        back_s = time.monotonic() - dropped_at
        assert caller.room.name == room
        await caller.wait_until(lambda: caller.agent_identity() is not None, 10, "the agent in the room")
        assert caller.agent_identity() == progress["answered"]["agent"], "the same agent"
        await asyncio.sleep(1.0)
        await ask(caller, standin, started)
        await caller.wait_until(
            lambda: any("Europe/Paris" in line for line in agent_lines(caller)), 20, "the answer in the transcript"
        )
        heard_greeting_again = any("Hello" in line for line in agent_lines(caller))
    print(f"\ncaller network drop: the agent saw the caller gone after {noticed_s:.1f} s ({drop['reason']}); "
          f"back in the room {back_s:.1f} s after the drop")

    record = await wait_record(restart_stack, room, lambda r: "job_ended" in lifecycle(r))
    events = lifecycle(record)
    assert events.index("caller_dropped") < events.index("caller_returned") < events.index("call_ended"), events
    assert record["jobs"] == 1 and "redispatched" not in events and events.count("job_ended") == 1, events
    assert record["end_reason"] == "caller left"
    # One conversation: greeted once, two questions answered, in one model session.
    assert roles(record) == ["assistant", "user", "assistant", "user", "assistant"], record["turns"]
    assert not heard_greeting_again
    sessions = sessions_since(standin, started)
    assert [s.session_id for s in sessions] == [session.session_id], "the same model session"
    assert len(completed_audio_turns(sessions)) == 2


# --- livekit-server restarts ----------------------------------------------------------------


async def test_livekit_restart_the_worker_registers_again_and_the_calls_go_on(
    restart_stack: ProcessStack, restart_standin: GeminiLiveStandin, caplog: pytest.LogCaptureFixture
) -> None:
    standin = restart_standin
    started = time.monotonic()
    caplog.set_level(logging.WARNING, logger="livekit")
    async with Caller(restart_stack.token_url, name="Ada") as caller:
        states = track_states(caller)
        room = caller.room.name
        await greeted(caller, standin, started)
        await ask(caller, standin, started)
        agent = caller.agent_identity()
        registered = registrations(restart_stack)
        pid = worker_pid(restart_stack)

        # Restarted as a service manager does it: SIGTERM, SIGKILL after a timeout (3 s here;
        # livekit-server drains on SIGTERM until its participants leave, and in a call they don't).
        stopped_at = time.monotonic()
        restart = threading.Thread(target=restart_stack.restart, args=("livekit",), kwargs={"stop_timeout_s": 3})
        restart.start()
        while restart.is_alive():
            await asyncio.sleep(0.05)
        healthy_at = time.monotonic()
        # The worker registers again by itself (no restart of its own).
        while registrations(restart_stack) <= registered:
            assert time.monotonic() - healthy_at < 60, "the worker did not register again"
            await asyncio.sleep(0.1)
        registered_s = time.monotonic() - healthy_at
        assert worker_pid(restart_stack) == pid

        # The call in flight: LiveKit's resume fails (the new server knows nothing of the
        # session), the SDKs' full reconnect rejoins a new room of the same name, and the
        # same agent job, still connected to the same model session, picks the caller up.
        await caller.wait_until(lambda: states and states[-1][1] == "CONN_CONNECTED", 60, "the caller reconnected")
        await caller.wait_until(lambda: caller.agent_identity() == agent, 30, "the same agent back")
        reconnected_s = states[-1][0] - healthy_at
        await asyncio.sleep(1.0)
        answered_s = await ask(caller, standin, started) - stopped_at
        agents = [p for p in caller.room.remote_participants.values()
                  if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT]
        states_in_call = [s for _, s in states]
    print(f"\nlivekit restart: stop+start {healthy_at - stopped_at:.1f} s; worker registered again "
          f"{registered_s:.1f} s after livekit was healthy; caller reconnected {reconnected_s:.1f} s after; "
          f"answered a question {answered_s:.1f} s after the SIGTERM")

    assert states_in_call == ["CONN_RECONNECTING", "CONN_CONNECTED"], states
    messages = [r.getMessage() for r in caplog.records]
    assert any("resuming connection failed" in m for m in messages), messages
    assert any("restarting connection" in m for m in messages), messages
    assert len(agents) == 1
    record = await wait_record(restart_stack, room, lambda r: r["end_reason"] is not None)
    assert record["jobs"] == 1 and "redispatched" not in lifecycle(record), record["events"]
    assert roles(record) == ["assistant", "user", "assistant", "user", "assistant"], record["turns"]
    sessions = sessions_since(standin, started)
    assert len(sessions) == 1 and len(completed_audio_turns(sessions)) == 2, "the same model session answered"

    # A new call works end to end.
    await a_new_call_works(restart_stack, standin)
