"""Starts the native stack's real processes for tests and benchmarks.

The commands are the Procfile's and the environment is `scripts/stack.py`'s, with
test overrides: free ports, a throw-away state directory, fresh LiveKit keys and the
Gemini Live stand-in as the model endpoint. Each process logs to its own file under
`log_dir`, so a failing test can show what the service said.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from scripts import stack
from tests.ports import free_port, free_udp_range

#: How long a test stack's agent waits for its caller (s); production default is 30 s.
NO_CALLER_TIMEOUT_S = 8

#: Start order: dependencies first (the Procfile's order). Optional processes (`sip`, with
#: SIP_ENABLED=true) follow them.
SERVICES = ("redis", "livekit", "token-server", "agent", "web")


#: The loopback trunk of test stacks with telephony (`telephony_overrides`).
TRUNK_NUMBER = "+15550100000"
TRUNK_USER = "trunk-user"
TRUNK_PASSWORD = "trunk-password-0123456789"


def telephony_overrides(outbound_port: int | None = None) -> dict[str, str]:
    """Overrides that add livekit-sip to a test stack, with a trunk for loopback calls.

    livekit-sip listens on 127.0.0.1 only, on free ports, with a CPU limit it never reaches
    (on a busy 2-core machine the default 0.9 refuses calls with "cpu exhausted"). Inbound:
    calls to `TRUNK_NUMBER` from 127.0.0.1/32 that answer the digest challenge with
    `TRUNK_USER` / `TRUNK_PASSWORD`. Outbound (with `outbound_port`): to a SIP peer on
    127.0.0.1:`outbound_port` over UDP, caller ID `TRUNK_NUMBER`.
    """
    rtp = free_udp_range(40)
    overrides = {
        "SIP_ENABLED": "true",
        "SIP_PORT": str(free_port(udp=True)),
        "SIP_RTP_PORTS": f"{rtp.start}-{rtp.stop - 1}",
        "SIP_HEALTH_PORT": str(free_port()),
        "SIP_PROMETHEUS_PORT": str(free_port()),
        "SIP_LISTEN_IP": "127.0.0.1",
        "SIP_MAX_CPU_UTILIZATION": "1.0",
        "SIP_INBOUND_NUMBERS": TRUNK_NUMBER,
        "SIP_INBOUND_ALLOWED_ADDRESSES": "127.0.0.1/32",
        "SIP_INBOUND_USERNAME": TRUNK_USER,
        "SIP_INBOUND_PASSWORD": TRUNK_PASSWORD,
    }
    if outbound_port is not None:
        overrides.update({
            "SIP_OUTBOUND_ADDRESS": f"127.0.0.1:{outbound_port}",
            "SIP_OUTBOUND_NUMBER": TRUNK_NUMBER,
            "SIP_OUTBOUND_TRANSPORT": "udp",
        })
    return overrides


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP listener on `port` (from /proc/net/tcp and tcp6)."""
    addresses = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addresses.add(socket.inet_ntop(family, raw))
    return addresses


def isolated_overrides(state_dir: Path, model_base_url: str, model_ca_file: str) -> dict[str, str]:
    """Environment overrides that isolate a test stack from anything else on the machine."""
    return {
        "LIVEKIT_API_KEY": "APItest" + secrets.token_hex(4),
        "LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "LIVEKIT_NODE_IP": "127.0.0.1",
        "LIVEKIT_PUBLIC_URL": "",
        "LIVEKIT_PORT": str(free_port()),
        "LIVEKIT_RTC_TCP_PORT": str(free_port()),
        "LIVEKIT_PROMETHEUS_PORT": str(free_port()),
        "REDIS_PORT": str(free_port()),
        "APPLIANCE_REDIS_PASSWORD": secrets.token_urlsafe(30),
        "TOKEN_SERVER_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        "AGENT_HEALTH_PORT": str(free_port()),
        "AGENT_METRICS_PORT": str(free_port()),
        "STATE_DIR": str(state_dir),
        "RECORDS_API_KEYS": "records-" + secrets.token_urlsafe(32),
        "GOOGLE_API_KEY": "stand-in-key",
        # Short, so the "nobody joined" test is quick; callers in tests join before the agent.
        "AGENT_PARTICIPANT_TIMEOUT_S": str(NO_CALLER_TIMEOUT_S),
        "GEMINI_BASE_URL": model_base_url,
        "GEMINI_CA_FILE": model_ca_file,
    }


def worker_info(ready_file: Path) -> dict:
    """An agent worker's `GET /worker` (livekit-agents: `active_jobs`, `worker_load`,
    `agent_name` ...), on the health port its ready file names.

    Raises:
        LookupError: the worker has not registered (no ready file yet).
        OSError: its health server does not answer.
    """
    worker = stack.agent_worker_health(ready_file)
    if worker is None:
        raise LookupError(f"no registered worker behind {ready_file}")
    with urllib.request.urlopen(f"http://127.0.0.1:{worker[1]}/worker", timeout=5) as response:
        return json.loads(response.read())


def worker_process(root_pid: int, index: int) -> int:
    """The main process of the native run's worker `index`: the descendant of `root_pid` (the
    stack's `agent` process) running `python -m voice_agent start` with AGENT_WORKER_INDEX=index.

    Raises:
        LookupError: no such process (yet).
    """
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    family, grew = {root_pid}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in family} - family
        family |= found
        grew = bool(found)
    for pid in sorted(family - {root_pid}):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"voice_agent start" in cmdline and f"AGENT_WORKER_INDEX={index}".encode() in environ:
            return pid
    raise LookupError(f"no process for worker {index}")


def _group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a running (not zombie) member (reads /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class ProcessStack:
    """The Procfile's processes, started and stopped one by one.

    Args:
        env: the complete environment (see `scripts.stack.build_env`).
        log_dir: one `<name>.log` per process is written there.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.commands = stack.procfile_commands(env=self.env)
        self.checks = stack.health_checks(self.env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)
        Path(self.env["STATE_DIR"], "redis").mkdir(parents=True, exist_ok=True)

    @property
    def web_url(self) -> str:
        """The front door, where the page and `/api/token` are served."""
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    @property
    def token_url(self) -> str:
        """The token endpoint through the front door."""
        return f"{self.web_url}/api/token"

    def start(self, names: Iterable[str] | None = None, timeout_s: float = 90.0) -> None:
        """Start processes in order and wait until each is healthy (default: `SERVICES`, then
        the optional processes `env` enables).

        Raises:
            RuntimeError: a process exited or stayed unhealthy; the message has its log tail.
        """
        if names is None:
            names = [*SERVICES, *(n for n in self.commands if n not in SERVICES)]
        for name in names:
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
            self.processes[name] = subprocess.Popen(
                self.commands[name],
                shell=True,
                cwd=stack.ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            self.wait_healthy([name], timeout_s)

    def wait_healthy(self, names: Iterable[str], timeout_s: float = 90.0) -> None:
        """Wait for the named processes' health checks.

        Raises:
            RuntimeError: a process exited or did not become healthy within `timeout_s` seconds.
        """
        names = list(names)
        failing = stack.wait_healthy(
            {n: self.checks[n] for n in names},
            timeout_s,
            should_stop=lambda: any(self.processes[n].poll() is not None for n in names),
        )
        dead = [n for n in names if self.processes[n].poll() is not None]
        if failing or dead:
            details = "\n".join(f"--- {n}.log ---\n{self.log_tail(n)}" for n in set(failing) | set(dead))
            raise RuntimeError(f"not healthy: {failing or dead}\n{details}")

    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to the process group of `name` (the shell and the service)."""
        os.killpg(self.processes[name].pid, sig)

    def stop(self, name: str, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s` seconds; returns the shell's exit code.

        Waits for the whole process group, not just the shell: a service that drains on
        SIGTERM (livekit-server waits for its participants to leave) outlives its shell,
        and would otherwise still hold its ports when it is started again.
        """
        process = self.processes.get(name)
        if process is None:
            return None
        if process.poll() is not None and not _group_alive(process.pid):
            return process.returncode
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(ProcessLookupError):
            self.signal(name, signal.SIGTERM)
        while (process.poll() is None or _group_alive(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None or _group_alive(process.pid):
            with contextlib.suppress(ProcessLookupError):
                self.signal(name, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while _group_alive(process.pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        return process.wait(5)

    def restart(self, name: str, timeout_s: float = 90.0, stop_timeout_s: float = 20.0) -> None:
        """Stop `name` (SIGKILL after `stop_timeout_s`) and start it again, waiting for its health check."""
        self.stop(name, stop_timeout_s)
        self.start([name], timeout_s)

    def close(self) -> None:
        """Stop every process, last started first."""
        for name in reversed(list(self.processes)):
            self.stop(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last `lines` lines of a process's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_log(self, name: str, needle: str, timeout_s: float = 10.0) -> bool:
        """Wait until `needle` appears in a process's log."""
        deadline = time.monotonic() + timeout_s
        path = self.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return True
            time.sleep(0.2)
        return False


@contextmanager
def running_stack(
    model_base_url: str,
    model_ca_file: str,
    state_dir: Path,
    log_dir: Path,
    extra: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
) -> Iterator[ProcessStack]:
    """Every Procfile process, isolated (`isolated_overrides` plus `extra`), started and healthy
    (each within `timeout_s` seconds).

    Stops them all on exit, whatever happened.
    """
    overrides = {**isolated_overrides(state_dir, model_base_url, model_ca_file), **(extra or {})}
    processes = ProcessStack(stack.build_env(env_file=None, overrides=overrides), log_dir)
    try:
        processes.start(timeout_s=timeout_s)
        yield processes
    finally:
        processes.close()


@contextmanager
def more_processes(
    base: ProcessStack, names: Iterable[str], overrides: Mapping[str, str], log_dir: Path
) -> Iterator[ProcessStack]:
    """More of the Procfile's processes (say a token server and a front door) next to
    `base`'s, with `base`'s environment plus `overrides` (their own ports, other settings),
    sharing its Redis, livekit-server and agent; started, healthy, and stopped on exit.

    Args:
        log_dir: where their `<name>.log` files go (not `base`'s, whose names they share).
    """
    processes = ProcessStack({**base.env, **overrides}, log_dir)
    try:
        processes.start(names)
        yield processes
    finally:
        processes.close()

