"""The native run's health checks: how to tell each Procfile process is ready to serve.

`health_checks(env)` gives one `HealthCheck` per process that runs with `env`; `wait_healthy`
polls them. The native run (stack.py), `./scripts/doctor`, the benches and the end-to-end
tests use them (stack.py re-exports them: `stack.health_checks`, ...).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 2xx within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def redis_ok(port: int, password: str) -> bool:
    """Whether the Redis on `port` answers PING (after AUTH with `password`, when set)."""
    import redis  # the stack's venv has it (token server, agent)

    client = redis.Redis(port=port, password=password or None, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class HealthCheck:
    """How to tell that one Procfile process is ready to serve.

    `ports` gives the TCP ports the process listens on once healthy (read when checked: the
    agent's come from its ready files), so a run can tell its own processes from others.
    """

    name: str
    probe: Callable[[], bool]
    describe: str
    ports: Callable[[], list[int]] = lambda: []


def agent_ready_files(env: Mapping[str, str]) -> list[Path]:
    """The ready file of each of the `AGENT_WORKERS` workers: `AGENT_READY_FILE.<N>`, N from 0
    (agent/supervisord.conf names them so)."""
    return [Path(f"{env['AGENT_READY_FILE']}.{n}") for n in range(int(env.get("AGENT_WORKERS") or 1))]


def agent_worker_health(ready_file: Path) -> tuple[str, int] | None:
    """(worker id, health port) from a worker's ready file (JSON written at registration), or
    None while it is missing or partly written."""
    try:
        ready = json.loads(ready_file.read_text(encoding="utf-8"))
        return str(ready["worker_id"]), int(ready["health_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _agent_ports(ready_files: list[Path]) -> list[int]:
    return [worker[1] for f in ready_files if (worker := agent_worker_health(f)) is not None]


def _agents_ok(ready_files: list[Path]) -> bool:
    """Every worker registered with LiveKit and answering on its health port."""
    for ready_file in ready_files:
        worker = agent_worker_health(ready_file)
        if worker is None or not http_ok(f"http://127.0.0.1:{worker[1]}/"):
            return False
    return True


def health_checks(env: Mapping[str, str]) -> dict[str, HealthCheck]:
    """One check per Procfile process that runs with `env`, keyed by process name."""
    livekit = f"http://127.0.0.1:{env['LIVEKIT_PORT']}/"
    token = f"http://127.0.0.1:{env['TOKEN_SERVER_PORT']}/healthz"
    web = f"http://127.0.0.1:{env['WEB_PORT']}/"
    agent_ready = agent_ready_files(env)
    redis_port = int(env["REDIS_PORT"])
    checks = {
        "redis": HealthCheck("redis", lambda: redis_ok(redis_port, env.get("APPLIANCE_REDIS_PASSWORD", "")),
                             f"PING on 127.0.0.1:{redis_port}", lambda: [redis_port]),
        "livekit": HealthCheck("livekit", lambda: http_ok(livekit), f"GET {livekit}",
                               lambda: [int(env["LIVEKIT_PORT"])]),
        "token-server": HealthCheck("token-server", lambda: http_ok(token), f"GET {token}",
                                    lambda: [int(env["TOKEN_SERVER_PORT"])]),
        "agent": HealthCheck(
            "agent",
            lambda: _agents_ok(agent_ready),
            f"{len(agent_ready)} worker(s) registered with LiveKit ({env['AGENT_READY_FILE']}.N) and "
            f"answering GET / on the health port each names",
            lambda: _agent_ports(agent_ready),
        ),
        "web": HealthCheck("web", lambda: http_ok(web), f"GET {web}", lambda: [int(env["WEB_PORT"])]),
    }
    from scripts.stack import process_enabled  # stack.py imports this module

    if process_enabled(env, "sip"):
        sip = f"http://127.0.0.1:{env['SIP_HEALTH_PORT']}/"  # 429 while over SIP_MAX_CPU_UTILIZATION
        checks["sip"] = HealthCheck("sip", lambda: http_ok(sip), f"GET {sip}", lambda: [int(env["SIP_HEALTH_PORT"])])
    return checks


def wait_healthy(
    checks: Mapping[str, HealthCheck],
    timeout_s: float = 90.0,
    should_stop: Callable[[], bool] = lambda: False,
    accept: Callable[[HealthCheck], bool] = lambda check: True,
) -> list[str]:
    """Poll every check until all pass or `timeout_s` (seconds) elapses.

    Args:
        accept: a further condition on a check whose probe passed (the native run: its
            ports are its own processes', `preflight.ports_owned`).

    Returns:
        The names of the checks still failing (empty when all are healthy).
    """
    pending = dict(checks)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline and not should_stop():
        for name in [n for n, check in pending.items() if check.probe() and accept(check)]:
            del pending[name]
        if pending:
            time.sleep(0.25)
    return list(pending)
