"""Helpers for tests and benchmarks that drive whole calls over the real stack.

The model sessions a call opened at the Gemini Live stand-in, the agent worker and job
processes behind it (to kill, stall or add one), and the call's record in Redis. The
processes themselves are started by `harness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from scripts import stack
from tests.audio import synthesize
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack
from tests.ports import free_port
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord, StandinConfig, ToolCallSpec

#: The tool call the stand-in makes on every spoken user turn (a tool the agent declares).
TIME_TOOL_CALL = ToolCallSpec(name="get_current_time", args={"timezone": "Europe/Paris"})

#: What the callers of the whole-call tests ask (the stand-in answers with `TIME_TOOL_CALL`).
UTTERANCE = "What time is it in Paris right now?"


def call_standin(cert_dir: Path) -> GeminiLiveStandin:
    """The Gemini Live stand-in of the whole-call tests (not started; use it as a context
    manager): TLS on 127.0.0.1 with its certificate in `cert_dir`, and `TIME_TOOL_CALL` on
    every spoken turn."""
    return GeminiLiveStandin(StandinConfig(tool_call=TIME_TOOL_CALL), cert_dir=cert_dir)


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
    # Up to a minute when the worker must start a job process on a busy 2-core box.
    await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 90, "the greeting's audio")
    sessions = await wait_sessions(standin, started, lambda ss: ss and ss[0].turns and ss[0].turns[0].turn_complete_at)
    await asyncio.sleep(0.5)
    return sessions[0]


async def answered_once_more(caller: Caller, standin: GeminiLiveStandin, started: float, timeout: float = 30) -> None:
    """Say `UTTERANCE` and wait until the agent's answer is heard (within `timeout` s)."""
    spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
    await caller.wait_until(
        lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, timeout, "an answer"
    )


def completed_audio_turns(sessions: list[SessionRecord]) -> list[tuple[str, int]]:
    return [(s.session_id, t.index) for s in sessions for t in s.turns if t.kind == "audio" and t.turn_complete_at]




def children(pid: int) -> list[int]:
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
        todo.extend(children(pid))
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


@contextlib.contextmanager
def worker_stopped(stack_: ProcessStack, *, ghost_lines: int = 0) -> Iterator[None]:
    """No agent worker registered (a restart, a crash loop); it is started again after.

    With `ghost_lines`, admission control still counts that many free lines of a worker that
    is gone: its capacity key outlives it by a few seconds (killed, or dead after publishing).
    Without them, admission control refuses every caller with 503 before any room exists.
    """
    import redis as sync_redis
    from voice_calls.admission import PENDING, PUBLISH, WITHDRAW, WORKERS, WorkerCapacity, worker_key

    stack_.stop("agent")
    store = sync_redis.Redis.from_url(stack_.env["REDIS_URL"], decode_responses=True)
    # The stopped worker's line is withdrawn, or expires within seconds: then none is left.
    deadline = time.monotonic() + 15
    while any(store.exists(worker_key(w)) for w in store.smembers(WORKERS)) and time.monotonic() < deadline:
        time.sleep(0.2)
    ghost = "ghost-worker"
    if ghost_lines:
        # Earlier calls (all over now) may still hold their admission place for the join window.
        store.delete(PENDING)
        value = WorkerCapacity(ghost_lines, False, [], time.time()).to_json()
        store.eval(PUBLISH, 2, WORKERS, worker_key(ghost), ghost, value, 300_000)
    try:
        yield
    finally:
        store.eval(WITHDRAW, 2, WORKERS, worker_key(ghost), ghost)
        store.close()
        stack_.start(["agent"])


def load_record(stack_: ProcessStack, room: str) -> dict[str, Any]:
    import redis as sync_redis

    from voice_calls.records import load_call

    client = sync_redis.Redis.from_url(stack_.env["REDIS_URL"], decode_responses=True)
    try:
        return load_call(client, room) or {}
    finally:
        client.close()


def job_pid(log: Path, room: str, timeout_s: float = 10.0) -> int:
    """The pid of the job process serving `room`, from a worker's JSON log lines.

    Raises:
        LookupError: no line of that room names a job process within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for line in log.read_text(errors="replace").splitlines():
            if room in line and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("room") == room and entry.get("job_id") and entry.get("pid"):
                        return int(entry["pid"])
        if time.monotonic() > deadline:
            raise LookupError(f"no job process of {room} in {log}")
        time.sleep(0.2)


def stall_event_loop(pid: int, seconds: float) -> None:
    """Block the asyncio loop of process `pid` (its main thread) for `seconds`, as long
    synchronous work on the loop would; its other threads (LiveKit's WebRTC, run by the
    Rust FFI) keep running. Done with gdb, which calls into the interpreter; returns once
    the loop runs again.

    Raises:
        RuntimeError: gdb failed.
    """
    code = f"import time; time.sleep({seconds:.3f})"
    result = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (int)PyGILState_Ensure()",
         "-ex", f'call (int)PyRun_SimpleString("{code}")', "-ex", "call (void)PyGILState_Release($1)",
         "-ex", "detach"],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    if result.returncode != 0 or "$2 = 0" not in result.stdout:
        raise RuntimeError(f"gdb could not stall {pid}: {result.stdout[-500:]} {result.stderr[-500:]}")


class ExtraWorker:
    """One more agent worker for `stack_`, started with `python -m voice_agent start` (no
    supervisor): its own health and metrics ports, ready file and log, in its own process group.

    Args:
        stack_: the stack whose environment it runs with.
        log: its log file.
    """

    def __init__(self, stack_: ProcessStack, log: Path) -> None:
        self.env = dict(stack_.env)
        self.env["AGENT_HEALTH_PORT"] = str(free_port())
        self.env["AGENT_METRICS_PORT"] = str(free_port())
        self.env["AGENT_READY_FILE"] = str(log.with_suffix(".ready"))
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ready(self) -> bool:
        """Registered with LiveKit (its ready file exists)."""
        return Path(self.env["AGENT_READY_FILE"]).exists()

    def start(self, timeout_s: float = 120.0) -> None:
        """Start it and wait until it has registered.

        Raises:
            RuntimeError: it exited or did not register within `timeout_s`.
        """
        Path(self.env["AGENT_READY_FILE"]).unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "voice_agent", "start"], cwd=stack.ROOT,
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the extra worker did not register:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the worker and its job processes (as a crash would)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (it drains), SIGKILL after `timeout_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.asynccontextmanager
async def extra_worker(stack_: ProcessStack, log: Path) -> AsyncIterator[ExtraWorker]:
    """An `ExtraWorker` registered for the block's length, then drained (SIGTERM) and stopped."""
    worker = ExtraWorker(stack_, log)
    await asyncio.to_thread(worker.start)
    try:
        yield worker
    finally:
        await asyncio.to_thread(worker.stop)


async def wait_record(
    stack_: ProcessStack, room: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the call record of `room` until `predicate(record)` holds; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        record = await asyncio.to_thread(load_record, stack_, room)
        if record and predicate(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"the record of {room} never got there: {record}")
        await asyncio.sleep(0.3)
