"""CPU and memory of process trees, read from /proc (Linux), for benchmarks and load tests.

CPU is the user + system time a tree's processes spent between two samples, as a share of
one core (100 % = one core busy). Memory is PSS (proportional set size, from
`/proc/<pid>/smaps_rollup`): pages shared between processes (the forkserver's preloaded
modules, shared libraries) are divided among them, so PSS adds up across processes where
RSS would count shared pages once per process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Clock ticks per second of /proc/<pid>/stat times.
_TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int | None:
    """User + system CPU ticks of a live process, None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[11]) + int(fields[12])


def descendants(root: int) -> set[int]:
    """`root` and every process below it (read from /proc/<pid>/task/<tid>/children)."""
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        found.add(pid)
        for tid in tasks:
            try:
                todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
            except OSError:
                pass
    return found


def pss_kib(pid: int) -> int:
    """PSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class TreeUsage:
    """What one named tree used over a sampling window.

    Attributes:
        cpu_s: CPU seconds (user + system) spent in the window.
        wall_s: the window's length, seconds.
        pss_mib: PSS samples of the whole tree, MiB.
        processes: the most processes seen in the tree at once.
    """

    cpu_s: float = 0.0
    wall_s: float = 0.0
    pss_mib: list[float] = field(default_factory=list)
    processes: int = 0

    @property
    def cpu_percent(self) -> float:
        """Average CPU over the window, % of one core."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def pss_mib_mean(self) -> float:
        return sum(self.pss_mib) / len(self.pss_mib) if self.pss_mib else 0.0


#: Gives a group's processes now.
Selector = Callable[[], set[int]]


def trees(*roots: Callable[[], int | None]) -> Selector:
    """A `Selector`: the processes below each root (a callable, as a root may be restarted)."""

    def select() -> set[int]:
        found: set[int] = set()
        for root in roots:
            pid = root()
            if pid is not None:
                found |= descendants(pid)
        return found

    return select


class UsageSampler:
    """Samples named groups of processes every `interval_s` in a thread, between `start()` and
    `stop()`.

    Args:
        groups: name -> `Selector` of the group's processes (see `trees`).
        interval_s: seconds between samples.
    """

    def __init__(self, groups: Mapping[str, Selector], interval_s: float = 1.0) -> None:
        self._roots = dict(groups)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.usage: dict[str, TreeUsage] = {name: TreeUsage() for name in self._roots}

    def start(self) -> None:
        self._stop.clear()
        self.usage = {name: TreeUsage() for name in self._roots}
        self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, TreeUsage]:
        """Stop sampling; the usage per tree over the window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.usage

    def _run(self) -> None:
        previous: dict[int, int] = {}
        last = time.monotonic()
        first = True
        while True:
            now = time.monotonic()
            seen: dict[int, int] = {}
            for name, select in self._roots.items():
                ticks = {pid: t for pid in select() if (t := _ticks(pid)) is not None}
                seen.update(ticks)
                usage = self.usage[name]
                if not first:
                    # New processes count from zero (their earlier time is unknown: spent before).
                    usage.cpu_s += sum(t - previous.get(pid, t) for pid, t in ticks.items()) / _TICKS
                    usage.wall_s += now - last
                usage.pss_mib.append(sum(pss_kib(pid) for pid in ticks) / 1024)
                usage.processes = max(usage.processes, len(ticks))
            previous = seen
            last, first = now, False
            if self._stop.wait(self._interval_s):
                return
