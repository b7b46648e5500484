"""The one module that touches honcho's private members (supervise.py builds on it).

honcho's `Manager` has no public view of the processes it started, nor a hook after it
installs its signal handlers. `AdaptedManager` reads its private state (`_processes`:
name -> {"obj", "process", "pid", "returncode"}; `_terminating`) and overrides `_start`,
and offers that as public methods. Printing and signalling use honcho's public pieces
(`honcho.printer.Message`, `honcho.compat.ProcessManager`).

Each private member used is pinned by tests/test_honcho_adapter.py; `check_version` refuses
a honcho other than `TESTED_VERSIONS` (the pin of requirements.lock) before a run starts.
"""

from __future__ import annotations

import datetime
from typing import Any

import honcho
from honcho import manager as honcho_manager
from honcho.compat import ProcessManager
from honcho.printer import Message

#: honcho versions whose private members this module relies on, tested (requirements.lock's pin).
TESTED_VERSIONS = ("2.0.0",)


class UntestedHonchoError(RuntimeError):
    """The installed honcho is not a version this adapter was tested with."""


def check_version(version: str = honcho.__version__) -> None:
    """Raises:
        UntestedHonchoError: one line naming the installed and the tested versions.
    """
    if version not in TESTED_VERSIONS:
        raise UntestedHonchoError(
            f"honcho {version} is installed, but scripts/honcho_adapter.py was written and tested against "
            f"{', '.join(TESTED_VERSIONS)} (it reaches into honcho's Manager); install the pinned version "
            "from requirements.lock, or test this one and add it there")


class AdaptedManager(honcho_manager.Manager):  # type: ignore[misc]
    """honcho's `Manager` with a public view of its processes and a hook after start.

    Args:
        printer: honcho's Printer; `say` writes system lines to it as honcho does.
    """

    def __init__(self, printer: Any) -> None:
        super().__init__(printer)
        self.printer = printer
        self.process_manager = ProcessManager()

    def started(self) -> None:
        """Called once honcho has started every command and installed its signal handlers."""

    def _start(self) -> None:
        super()._start()
        self.started()

    @property
    def stopping(self) -> bool:
        """A stop has begun (`begin_stop` was called)."""
        return bool(self._terminating)

    def begin_stop(self) -> bool:
        """Mark the stop begun (honcho then stops calling `terminate` for it); False if it was."""
        if self._terminating:
            return False
        self._terminating = True
        return True

    def names(self) -> list[str]:
        """The Procfile names added, in order."""
        return list(self._processes)

    def pids(self) -> dict[str, int]:
        """The pid of each started command (its session id), by name."""
        return {name: p["pid"] for name, p in self._processes.items() if p.get("pid")}

    def exited(self, name: str) -> bool:
        """honcho has seen `name`'s command exit."""
        return "returncode" in self._processes[name]

    def runners(self) -> list[Any]:
        """honcho's own `multiprocessing.Process` per command (each runs one command)."""
        return [p["process"] for p in self._processes.values() if "process" in p]

    def say(self, line: str) -> None:
        """Print `line` as honcho prints its own ("system") lines."""
        self.printer.write(Message(type="line", data=line + "\n", time=datetime.datetime.now(),
                                   name=honcho_manager.SYSTEM_PRINTER_NAME, colour=None))
