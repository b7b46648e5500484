"""Processes and the ports they hold, read with psutil (Linux /proc underneath).

The native run (`scripts/stack.py`), its supervisor (`scripts/supervise.py`) and
`scripts/doctor` ask the same questions: which process listens on a port, and which
processes belong to a run. A process belongs to a run when it descends from the run's
supervisor; the supervisor is a child subreaper (`become_subreaper`), so a process whose
parent died is handed to it, not to init, and stays in its tree until it exits.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

#: prctl(2) option: orphaned descendants are reparented to this process, not to init.
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class PortUse:
    """A socket bound to a port: TCP in LISTEN state, or a bound UDP socket.

    Attributes:
        port: the local port number.
        udp: True for UDP, False for TCP.
        address: the local address it is bound to (`0.0.0.0`, `::`, `127.0.0.1` ...).
        pid: the owning process, or None when it cannot be seen (another user's, without root).
    """

    port: int
    udp: bool
    address: str
    pid: int | None


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux prctl(2)).

    Returns:
        False when the kernel refuses (not Linux, or too old); orphans then go to init and
        only processes still attached to this one are seen in `tree`.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tree(root: int) -> set[int]:
    """The live (not zombie) processes below `root`, `root` excluded."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return set()
    return {p.pid for p in children if _alive(p)}


def sessions(sids: Iterable[int]) -> dict[int, set[int]]:
    """The live processes of each session in `sids`: a Procfile process and everything it
    started, wherever they were reparented (only setsid(2) leaves a session)."""
    found: dict[int, set[int]] = {sid: set() for sid in sids}
    for proc in psutil.process_iter():
        try:
            sid = os.getsid(proc.pid)
            if sid in found and _alive(proc):
                found[sid].add(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(pid: int | None, width: int = 80) -> str:
    """`pid 1234 (redis-server --port 6390)`: a process as people can find it in `ps`."""
    if pid is None:
        return "a process this user cannot see (run `sudo ss -lntup` to name it)"
    try:
        proc = psutil.Process(pid)
        command = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return f"pid {pid} (gone)"
    if len(command) > width:
        command = command[: width - 3] + "..."
    return f"pid {pid} ({command})"


def port_uses(ports: Iterable[int] | None = None) -> list[PortUse]:
    """Listening TCP sockets and bound UDP sockets, on `ports` (None: every port).

    Sockets that only connect out (an established TCP connection, a UDP socket with a
    peer) are left out: they do not stop a server from binding the port.
    """
    wanted = None if ports is None else set(ports)
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr or (wanted is not None and conn.laddr.port not in wanted):
            continue
        udp = conn.type == socket.SOCK_DGRAM
        if (udp and conn.raddr) or (not udp and conn.status != psutil.CONN_LISTEN):
            continue
        found.append(PortUse(conn.laddr.port, udp, conn.laddr.ip, conn.pid))
    return found
