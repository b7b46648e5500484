"""The native run's supervisor: honcho's Manager, stopping in stages and waiting for everything.

honcho (2.0, pinned in requirements.lock; reached through honcho_adapter.py, the one place
that touches its private members) starts the Procfile's commands, each in a session of its
own, and merges their output. Its stop is too blunt for a voice appliance: SIGTERM to every process at
once, SIGKILL to their process groups `KILL_WAIT` seconds later, and a return as soon as
each command's shell has exited. A worker that supervisord runs in a process group of its
own survives that kill and keeps draining (and holding its port) after `./scripts/run`
has returned.

`StagedManager` stops instead (on Ctrl-C, SIGTERM, or a process exiting on its own):

1. `STOP_STAGES[0]`, the agent and livekit-sip: they finish their live calls (the agent
   within AGENT_DRAIN_TIMEOUT_S) while everything those calls use still runs;
2. then the token server, the front door and livekit-server; livekit-server waits for
   participants to leave and Caddy for their signalling connections, so both get a second
   SIGTERM (their "stop now") after `RESIGNAL_AFTER_S`;
3. then Redis, which holds the others' state.

A stage starts once every process of the one before has exited: every process in the
sessions of its commands, not only the shells. A second Ctrl-C forces: SIGKILL to every
process of the run but Redis, then SIGTERM to Redis. `loop()` returns only when no process
the run started is left: the supervisor is a child subreaper, so processes whose parent
died are reparented to it and waited for too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from scripts import honcho_adapter, procs

#: The stop order, by Procfile name; a process in no stage stops with the second one.
STOP_STAGES: tuple[tuple[str, ...], ...] = (("agent", "sip"), ("token-server", "web", "livekit"), ("redis",))
#: Processes that get a second SIGTERM (their own "stop now") this long after the first, seconds.
RESIGNAL_AFTER_S: Mapping[str, float] = {"livekit": 10.0, "web": 10.0}
#: How often a stop that takes long says what it waits for, seconds.
STATUS_EVERY_S = 30.0
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

class StagedManager(honcho_adapter.AdaptedManager):
    """honcho's Manager with the staged stop and the wait described in the module docstring.

    Args:
        printer: honcho's Printer.
        notes: a line to print when a process is asked to stop, by Procfile name (what it
            does before it exits, e.g. the agent's drain).
    """

    def __init__(self, printer: Any, notes: Mapping[str, str] | None = None) -> None:
        super().__init__(printer)
        self._notes = dict(notes or {})
        self._forced = threading.Event()
        self._stopper: threading.Thread | None = None
        self.subreaper = procs.become_subreaper()

    def run_processes(self) -> set[int]:
        """Every live process this run started (its descendants, honcho's own included)."""
        return procs.tree(os.getpid())

    # --- honcho's hooks -----------------------------------------------------------------

    def started(self) -> None:
        # honcho installed its handlers in loop(); ours tell a first signal from a second.
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def terminate(self) -> None:
        """Begin the staged stop (honcho calls this when a process exits on its own)."""
        if not self.begin_stop():
            return
        self._stopper = threading.Thread(target=self._stop_in_stages, name="staged-stop", daemon=True)
        self._stopper.start()

    def kill(self) -> None:
        """honcho's escalation after KILL_WAIT: replaced by the stages and a second Ctrl-C."""

    def loop(self) -> None:
        """Run until every process of the run has exited (see the module docstring)."""
        super().loop()
        for runner in self.runners():
            runner.join(5)
        announced = False
        while left := self.run_processes():
            if self._forced.is_set():
                _signal_all(left, signal.SIGKILL)
            elif not announced:
                announced = True
                self._say(f"waiting for {len(left)} process(es) that outlived their command: "
                          + "; ".join(procs.describe(pid) for pid in sorted(left)))
            _reap()
            time.sleep(0.2)
        _reap()

    # --- the stop -----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not self.stopping:
            self.returncode = _EXIT_CODES.get(signum, 1)
            self._say(f"{name} received: stopping (Ctrl-C again stops everything at once)")
            self.terminate()
        elif not self._forced.is_set():
            self._say(f"{name} received again: killing every process of the run now, Redis last")
            self._force()

    def _stop_in_stages(self) -> None:
        staged = {n for stage in STOP_STAGES for n in stage}
        stages = [list(stage) for stage in STOP_STAGES]
        stages[1] += [n for n in self.names() if n not in staged]
        for stage in stages:
            names = [n for n in stage if n in self.names()]
            if not self._stop_stage(names):
                return

    def _stop_stage(self, names: list[str]) -> bool:
        """SIGTERM `names` and wait until all their processes are gone; False when forced."""
        pids = self._wait_started(names)
        started = time.monotonic()
        resignal = {n: started + RESIGNAL_AFTER_S[n] for n in names if n in RESIGNAL_AFTER_S}
        for name in names:
            if name in pids and not self.exited(name):
                self._say(f"sending SIGTERM to {name} (pid {pids[name]})"
                          + (f": {self._notes[name]}" if name in self._notes else ""))
                self.process_manager.terminate(pids[name])
        next_status = started + STATUS_EVERY_S
        while True:
            if self._forced.is_set():
                return False
            alive = {sid: found for sid, found in procs.sessions(pids.values()).items() if found}
            waiting = [n for n in names if not self.exited(n) or pids.get(n) in alive]
            if not waiting:
                return True
            now = time.monotonic()
            for name in [n for n, at in resignal.items() if now >= at]:
                del resignal[name]
                if name in waiting:
                    self._say(f"{name} is still stopping after {RESIGNAL_AFTER_S[name]:.0f} s: "
                              f"SIGTERM again (it closes what is left at once)")
                    self.process_manager.terminate(pids[name])
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                self._say(f"still stopping after {now - started:.0f} s: " + ", ".join(
                    f"{n} ({len(alive.get(pids.get(n, -1), ()))} process(es))" for n in waiting))
            time.sleep(0.25)

    def _wait_started(self, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
        """The pids of `names`, waiting for honcho to report the start of each (a stop
        can begin while it is still starting them)."""
        deadline = time.monotonic() + timeout_s
        while any(n not in self.pids() and not self.exited(n) for n in names):
            if time.monotonic() > deadline or self._forced.is_set():
                break
            time.sleep(0.05)
        return {n: pid for n, pid in self.pids().items() if n in names}

    def _force(self) -> None:
        self._forced.set()
        keep_last = set()
        for sid, found in procs.sessions(self.pids()[n] for n in STOP_STAGES[-1] if n in self.pids()).items():
            keep_last |= found | {sid}
        honchos = {runner.pid for runner in self.runners()}
        _signal_all(self.run_processes() - keep_last - honchos, signal.SIGKILL)

        def then_the_last() -> None:
            deadline = time.monotonic() + 10
            while self.run_processes() - keep_last - honchos and time.monotonic() < deadline:
                _signal_all(self.run_processes() - keep_last - honchos, signal.SIGKILL)
                time.sleep(0.1)
            for pid in keep_last:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

        threading.Thread(target=then_the_last, name="forced-stop", daemon=True).start()

    def _say(self, line: str) -> None:
        self.say(line)
        sys.stdout.flush()


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap() -> None:
    """Collect the exit status of orphans handed to this subreaper (they are zombies until then)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
