"""`./scripts/run` (python -m scripts.stack run) as a person uses it: start, call, Ctrl-C, again.

Each test runs the real command in a session of its own, with an `.env` of free ports and
the Gemini Live stand-in, and reads what it prints. What a run started is read from /proc
(psutil) while it runs, so the tests can tell that nothing of it is left when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts import health, preflight, procs, stack
from tests.e2e.caller import Caller
from tests.e2e.harness import isolated_overrides
from tests.ports import free_port
from tests.e2e.calls import answered_once_more, greeted
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e

#: Every service started and healthy, on a busy machine (s): the run's own --start-timeout.
START_TIMEOUT_S = 300
#: A job process starting on a busy machine (imports, model connect) before the greeting (s).
JOB_START_TIMEOUT_S = 180
#: The crash-looping agent's run: the other services are up well within this (s; under 20 s
#: on a busy machine while other test files run beside it).
CRASH_LOOP_TIMEOUT_S = 60


class Run:
    """One `python -m scripts.stack run --env-file ENV` in a session of its own; its output is
    collected line by line (and written to `log`)."""

    def __init__(self, env_file: Path, log: Path, start_timeout_s: float = START_TIMEOUT_S) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.stack", "run", "--env-file", str(env_file),
             "--start-timeout", str(start_timeout_s)],
            cwd=stack.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def note_processes(self) -> None:
        """Remember every process below the run now (psutil objects: a reused pid is not taken
        for the same process)."""
        for pid in procs.tree(self.process.pid):
            with contextlib.suppress(psutil.Error):
                self.seen.setdefault(pid, psutil.Process(pid))

    def wait_for(self, text: str, timeout_s: float) -> None:
        """Wait until `text` is in a line of stdout, while the run remembers its processes.

        Raises:
            AssertionError: the run exited or `timeout_s` passed first.
        """
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.stdout):
            assert self.process.poll() is None, f"the run exited ({self.process.returncode}): {self.tail()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s:.0f} s: {self.tail()}"
            self.note_processes()
            time.sleep(0.5)
        self.note_processes()

    def wait(self, timeout_s: float) -> int:
        """Wait for the run to return; its exit status."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"the run did not return within {timeout_s:.0f} s: {self.tail()}"
            self.note_processes()
            time.sleep(0.2)
        for reader in self._readers:
            reader.join(10)
        return self.process.returncode

    def left_running(self) -> list[str]:
        """The processes the run started that are still running."""
        return [procs.describe(p.pid) for p in self.seen.values() if p.is_running() and p.status() != "zombie"]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(["--- stdout", *self.stdout[-lines:], "--- stderr", *self.stderr[-lines:]])

    def close(self) -> None:
        """Whatever happened: Ctrl-C twice, then SIGKILL to anything left."""
        if self.process.poll() is None:
            for _ in range(2):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGINT)
                time.sleep(1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(60)
        for proc in self.seen.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)
        self._log.close()


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


@pytest.fixture
def run_env(standin: GeminiLiveStandin, tmp_path: Path) -> dict[str, str]:
    """An isolated `.env` for one run: free ports, its own state directory, the stand-in.

    A job's room claim lives 15 s, not 4: on a busy machine a job's event loop stalls for
    seconds, and the call watchdog would hand a live call to a new job mid-drain.
    """
    return {**isolated_overrides(tmp_path / "state", standin.base_url, str(standin.ca_file)),
            "AGENT_ROOM_CLAIM_TTL_S": "15"}


@contextlib.contextmanager
def running(env_file: Path, log: Path, start_timeout_s: float = START_TIMEOUT_S) -> Iterator[Run]:
    run = Run(env_file, log, start_timeout_s)
    try:
        yield run
    finally:
        run.close()


def test_a_taken_port_is_refused_in_one_line_naming_the_port_and_its_holder(
    run_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    port = int(run_env["AGENT_HEALTH_PORT"])
    holder = subprocess.Popen([sys.executable, "-c", (
        "import socket, time\n"
        f"s = socket.create_server(('0.0.0.0', {port}))\n"
        "print('listening', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "listening"
        with running(write_env(tmp_path / ".env", run_env), log_dir / "run" / "refused.log") as run:
            assert run.wait(120) == 2
            assert len(run.stderr) == 1, run.tail()
            line = run.stderr[0]
            # The holder as procs.describe shows it: `pid N (its command, cut to a line's width)`.
            assert line == (f"run: port {port} (AGENT_HEALTH_PORT) is in use by {procs.describe(holder.pid)}: "
                            "stop it, or move the port in .env"), line
            assert f"pid {holder.pid} ({sys.executable} -c" in line, line
            assert run.seen == {}, "nothing was started"
        assert preflight.port_conflicts(stack.build_env(env_file=tmp_path / ".env", base={})) != []
    finally:
        holder.kill()
        holder.wait()
    # The port free again, nothing is in the way.
    assert preflight.port_conflicts(stack.build_env(env_file=tmp_path / ".env", base={})) == []


def test_ports_count_only_when_this_runs_own_processes_listen_on_them(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not health.http_ok(f"http://127.0.0.1:{port}/"):
            assert time.monotonic() < deadline and server.poll() is None, "the HTTP server did not start"
            time.sleep(0.2)
        check = stack.HealthCheck("web", lambda: health.http_ok(f"http://127.0.0.1:{port}/"), "GET /", lambda: [port])
        ours = procs.tree(os.getpid())
        assert server.pid in ours and preflight.ports_owned(check, ours)
        another_run = ours - {server.pid}
        assert not preflight.ports_owned(check, another_run)
        assert stack.wait_healthy({"web": check}, timeout_s=2, accept=lambda c: preflight.ports_owned(c, another_run)) == ["web"]
        assert preflight.foreign_listeners({"web": check}, another_run) == [
            f"web: port {port} is answered by {procs.describe(server.pid)}, not by this run"]
    finally:
        server.kill()
        server.wait()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def test_ctrl_c_returns_once_every_process_has_exited_after_the_drain_and_a_new_run_starts_clean(
    run_env: dict[str, str], tmp_path: Path, log_dir: Path, standin: GeminiLiveStandin
) -> None:
    env_file = write_env(tmp_path / ".env", {**run_env, "AGENT_DRAIN_TIMEOUT_S": "600"})
    env = stack.build_env(env_file=env_file, base={})
    token_url = f"http://127.0.0.1:{env['WEB_PORT']}/api/token"
    logs = log_dir / "run"
    with running(env_file, logs / "first.log") as first:
        first.wait_for("The appliance is up", START_TIMEOUT_S + 60)
        # One run per state directory: a second one is refused while this one runs.
        with running(env_file, logs / "second-refused.log") as second:
            assert second.wait(120) == 2
            assert second.stderr == [
                f"run: another ./scripts/run (pid {first.process.pid}) is running with {env['STATE_DIR']}: stop it "
                f"first (Ctrl-C in its terminal), or wait until it returns (it lets live calls finish)"], second.tail()
        started = time.monotonic()
        async with Caller(token_url, name="Ada") as caller:
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
            await greeted(caller, standin, started)
            first.note_processes()
            os.kill(first.process.pid, signal.SIGINT)  # Ctrl-C in the middle of the call
            await wait_for_line(first, "sending SIGTERM to agent")
            # The call goes on through the drain: the agent still answers ...
            await answered_once_more(caller, standin, started, timeout=60)
            assert first.process.poll() is None, "the run returned during a live call"
            first.note_processes()
        # ... and once the caller has hung up, everything stops, and only then does the run return.
        assert first.wait(300) == 130, first.tail()
        assert first.left_running() == [], first.tail()
        assert len(first.seen) >= 6, f"the run's processes were seen: {first.seen}"
        taken = [p for p in preflight.service_ports(env) if not _bindable(p.port)]
        assert taken == [], f"ports still held after the run returned: {taken}"
        said = "\n".join(first.stdout)
        assert said.index("sending SIGTERM to agent") < said.index("sending SIGTERM to livekit") \
            < said.index("sending SIGTERM to redis"), said

    # Started again at once, the new run is up with its own processes, and a call gets its agent.
    # A second Ctrl-C does not wait for the call: the run kills everything and returns.
    with running(env_file, logs / "again.log") as again:
        again.wait_for("The appliance is up", START_TIMEOUT_S + 60)
        started = time.monotonic()
        async with Caller(token_url, name="Bob") as caller:
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
            await greeted(caller, standin, started)
            again.note_processes()
            os.kill(again.process.pid, signal.SIGINT)
            await wait_for_line(again, "sending SIGTERM to agent")
            os.kill(again.process.pid, signal.SIGINT)
            while again.process.poll() is None:
                assert time.monotonic() < started + JOB_START_TIMEOUT_S + 120, again.tail()
                await asyncio.sleep(0.2)
            assert again.wait(10) == 130, again.tail()
            assert again.left_running() == [], again.tail()
            assert [p for p in preflight.service_ports(env) if not _bindable(p.port)] == []


async def wait_for_line(run: Run, text: str, timeout_s: float = 60) -> None:
    """`Run.wait_for` for async tests: the event loop (a caller's audio) keeps running."""
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in run.stdout):
        assert time.monotonic() < deadline, f"no {text!r}: {run.tail()}"
        await asyncio.sleep(0.2)


def test_a_crash_looping_agent_is_never_announced_up_and_the_run_stops_everything(
    run_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    # An invalid setting: every worker start exits at once with status 2, and supervisord
    # starts it again and again.
    env_file = write_env(tmp_path / ".env", {**run_env, "AGENT_MAX_CALLS": "0"})
    with running(env_file, log_dir / "run" / "crash-loop.log", CRASH_LOOP_TIMEOUT_S) as run:
        proc = run.process
        deadline = time.monotonic() + CRASH_LOOP_TIMEOUT_S + 120
        while proc.poll() is None:
            assert time.monotonic() < deadline, run.tail()
            run.note_processes()
            time.sleep(0.5)
        assert proc.returncode != 0
        assert not any("The appliance is up" in line for line in run.stdout), run.tail()
        assert any(line.startswith(f"run: not healthy after {CRASH_LOOP_TIMEOUT_S} s: agent;") for line in run.stderr), \
            run.tail()
        assert run.left_running() == [], run.tail()
