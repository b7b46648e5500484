"""Pins each private member of honcho's Manager that scripts/honcho_adapter.py relies on.

A real Manager runs real commands: an upgrade that changes what the adapter reads fails here,
not when `./scripts/run` stops a live appliance.
"""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from honcho import manager as honcho_manager
from honcho.printer import Printer

from scripts import honcho_adapter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def restore_signals() -> Iterator[None]:
    """honcho's `loop()` installs SIGINT/SIGTERM handlers in this process."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_tested_version_is_the_locked_one() -> None:
    pin = re.search(r"^honcho==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    assert pin is not None and pin.group(1) in honcho_adapter.TESTED_VERSIONS
    honcho_adapter.check_version()


def test_an_untested_honcho_is_refused_with_one_line() -> None:
    with pytest.raises(honcho_adapter.UntestedHonchoError) as refused:
        honcho_adapter.check_version("3.0.0")
    message = str(refused.value)
    assert "\n" not in message and "honcho 3.0.0 is installed" in message
    assert honcho_adapter.TESTED_VERSIONS[0] in message


class Watched(honcho_adapter.AdaptedManager):
    def __init__(self, printer: Printer) -> None:
        super().__init__(printer)
        self.started_calls = 0
        self.handler_at_start: object = None

    def started(self) -> None:
        self.started_calls += 1
        self.handler_at_start = signal.getsignal(signal.SIGTERM)


def test_the_adapter_sees_honchos_processes(restore_signals: None) -> None:
    """`_start` (after honcho's handlers), `_processes` (pid, returncode, process),
    `_terminating`; each command runs in a session of its own, stopped by its pid."""
    out = io.StringIO()
    manager = Watched(Printer(out))
    manager.add_process("long", "sleep 30")
    manager.add_process("short", "sleep 0.5")
    seen: dict[str, object] = {}

    def watch() -> None:
        deadline = time.monotonic() + 20
        while len(manager.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = manager.pids()["long"]
        seen["session"] = os.getsid(pid) == pid
        seen["exited_while_running"] = manager.exited("long")
        seen["stopping_while_running"] = manager.stopping

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    manager.loop()  # "short" exits: honcho's terminate stops "long" (SIGTERM to its session)
    watcher.join()
    assert time.monotonic() - started < 20
    assert manager.started_calls == 1 and callable(manager.handler_at_start)  # honcho's, set before
    assert seen == {"session": True, "exited_while_running": False, "stopping_while_running": False}
    assert manager.names() == ["long", "short"]
    assert manager.exited("long") and manager.exited("short")
    assert manager.stopping and manager.begin_stop() is False
    assert {r.name for r in manager.runners()} == {"long", "short"} and all(r.pid for r in manager.runners())
    manager.say("a line of ours")
    assert re.search(r"system\s*\| a line of ours", out.getvalue()), out.getvalue()


def test_begin_stop_marks_the_stop_honcho_checks() -> None:
    manager = honcho_adapter.AdaptedManager(Printer(io.StringIO()))
    assert not manager.stopping and manager.begin_stop() and manager.stopping
    manager.terminate()  # honcho's own: a no-op once the stop is marked
    assert manager.begin_stop() is False


def test_nothing_added_shadows_a_honcho_attribute() -> None:
    """The attributes the adapter and supervise.py set are not names honcho's Manager uses."""
    plain = honcho_manager.Manager(Printer(io.StringIO()))
    adapted = honcho_adapter.AdaptedManager(Printer(io.StringIO()))
    assert set(vars(adapted)) - set(vars(plain)) == {"printer", "process_manager"}
    supervise = (ROOT / "scripts" / "supervise.py").read_text()
    ours = set(re.findall(r"self\.(\w+) = ", supervise)) - {"returncode"}  # honcho's public result
    assert ours and not ours & (set(vars(plain)) | set(dir(honcho_manager.Manager)))
