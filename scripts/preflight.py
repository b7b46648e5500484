"""What the native run checks before it starts and before it says "up".

Before: nothing else holds a port the stack binds (`port_conflicts`: one line per process
in the way, naming it), and no other run uses the same state directory (`lock_state_dir`).
Before "up": each service's ports are held by this run's own processes (`ports_owned`), so
an earlier run's process still answering on a port (a worker draining its last call) is
not taken for this run's.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from scripts import procs
from scripts.health import HealthCheck
from scripts.stack import LIVEKIT_CONFIG, process_enabled


@dataclass(frozen=True)
class ServicePort:
    """A port a Procfile process binds, and the setting that moves it."""

    port: int
    setting: str
    udp: bool = False

    def __str__(self) -> str:
        return f"{self.port}{'/udp' if self.udp else ''} ({self.setting})"


def service_ports(env: Mapping[str, str]) -> list[ServicePort]:
    """Every fixed port the processes that run with `env` bind (LiveKit's media range aside:
    livekit-server takes a free port from it per participant)."""
    config = yaml.safe_load(LIVEKIT_CONFIG.read_text(encoding="utf-8"))
    rtc_tcp = env.get("LIVEKIT_RTC_TCP_PORT") or config["rtc"]["tcp_port"]
    ports = [
        ServicePort(int(env["REDIS_PORT"]), "REDIS_PORT"),
        ServicePort(int(env["LIVEKIT_PORT"]), "livekit.yaml port"),
        ServicePort(int(rtc_tcp), "livekit.yaml rtc.tcp_port"),
        ServicePort(int(env.get("LIVEKIT_PROMETHEUS_PORT") or config["prometheus"]["port"]), "livekit.yaml prometheus.port"),
        ServicePort(int(env["TOKEN_SERVER_PORT"]), "TOKEN_SERVER_PORT"),
        ServicePort(int(env["WEB_PORT"]), "WEB_PORT"),
    ]
    base = int(env["AGENT_HEALTH_PORT"])
    if base:
        ports += [ServicePort(base + n, "AGENT_HEALTH_PORT" + (f" + {n}" if n else ""))
                  for n in range(int(env.get("AGENT_WORKERS") or 1))]
    metrics = int(env.get("AGENT_METRICS_PORT") or 0)
    if metrics:
        ports += [ServicePort(metrics + n, "AGENT_METRICS_PORT" + (f" + {n}" if n else ""))
                  for n in range(int(env.get("AGENT_WORKERS") or 1))]
    if process_enabled(env, "sip"):
        sip = int(env["SIP_PORT"])
        ports += [ServicePort(sip, "SIP_PORT"), ServicePort(sip, "SIP_PORT", udp=True),
                  ServicePort(int(env["SIP_HEALTH_PORT"]), "SIP_HEALTH_PORT")]
        if int(env.get("SIP_PROMETHEUS_PORT") or 0):
            ports.append(ServicePort(int(env["SIP_PROMETHEUS_PORT"]), "SIP_PROMETHEUS_PORT"))
    return ports


def port_conflicts(env: Mapping[str, str]) -> list[str]:
    """The ports of `service_ports` already taken, one line per process holding any, naming
    the ports, the process and the fix."""
    wanted = service_ports(env)
    uses = procs.port_uses({p.port for p in wanted})
    taken: dict[int | None, list[ServicePort]] = {}
    for port in wanted:
        holder = next((u.pid for u in uses if u.port == port.port and u.udp == port.udp), False)
        if holder is not False:
            taken.setdefault(holder, []).append(port)
    return [
        f"port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))} "
        f"{'are' if len(ports) > 1 else 'is'} in use by {procs.describe(pid)}: "
        f"stop it, or move the port{'s' if len(ports) > 1 else ''} in .env"
        for pid, ports in taken.items()
    ]


def lock_state_dir(state_dir: Path) -> int | str:
    """Hold `STATE_DIR/run.lock` for this process's life: one run per state directory.

    Returns:
        The open lock's file descriptor, or a one-line message naming the run holding it.
    """
    path = state_dir / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        return (f"another ./scripts/run (pid {holder}) is running with {state_dir}: stop it first (Ctrl-C "
                f"in its terminal), or wait until it returns (it lets live calls finish)")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def ports_owned(check: HealthCheck, mine: set[int]) -> bool:
    """Whether every port of `check.ports()` has a listening socket of a process in `mine`."""
    ports = check.ports()
    uses = procs.port_uses(ports)
    return all(any(u.port == port and not u.udp and u.pid in mine for u in uses) for port in ports)


def foreign_listeners(checks: Mapping[str, HealthCheck], mine: set[int]) -> list[str]:
    """One line per port of `checks` that a process outside `mine` listens on (why a check
    that answers does not count)."""
    return [
        f"{check.name}: port {use.port} is answered by {procs.describe(use.pid)}, not by this run"
        for check in checks.values()
        for use in procs.port_uses(check.ports())
        if not use.udp and use.pid not in mine
    ]
