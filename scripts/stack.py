"""The native appliance: its environment, its processes (the Procfile) and their health.

`./scripts/run` calls `python -m scripts.stack run`, which supervises the Procfile's
processes with honcho (`scripts/supervise.py`), waits until every service answers its health
check, prints the URL to open and stops everything on Ctrl-C. The end-to-end tests build the same
environment (with their own ports) and start the same Procfile commands.

Precedence of settings: `.env.example` (defaults) < `.env` < the caller's environment
< explicit overrides (tests).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import yaml

from scripts.health import (  # re-exported: callers use stack.health_checks, stack.HealthCheck, ...
    HealthCheck,
    agent_ready_files,
    agent_worker_health,
    health_checks,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "calls") not in sys.path:  # the services' shared package, as they get it
    sys.path.append(str(ROOT / "calls"))

from voice_calls.credentials import LIVEKIT_DEV_SECRET, MIN_SECRET_LENGTH  # noqa: E402
ENV_EXAMPLE = ROOT / ".env.example"
PROCFILE = ROOT / "Procfile"
LIVEKIT_CONFIG = ROOT / "livekit.yaml"
#: What `VIDEO_INPUT` may say (the front door's Permissions-Policy follows it).
VIDEO_INPUTS = ("off", "camera", "screen", "both")
#: Procfile processes that run only when a setting is true: process name -> setting.
OPTIONAL_PROCESSES = {"sip": "SIP_ENABLED"}


def parse_env_file(path: Path) -> dict[str, str]:
    """Read `KEY=value` lines (comments and blank lines skipped, no interpolation).

    Raises:
        OSError: when the file cannot be read.
    """
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def ensure_env_file(path: Path) -> bool:
    """Create `.env` from `.env.example` with a fresh LiveKit API key and secret and Redis
    password (`APPLIANCE_REDIS_PASSWORD`, compose's too).

    Never overwrites a value; fills an empty or missing one in an existing file.

    Returns:
        True when the file was created or changed.
    """
    lines = (path if path.exists() else ENV_EXAMPLE).read_text(encoding="utf-8").splitlines()
    generated = {
        "LIVEKIT_API_KEY": "API" + secrets.token_hex(6),
        "LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "APPLIANCE_REDIS_PASSWORD": secrets.token_urlsafe(30),
    }
    changed = not path.exists()
    out = []
    present = set()
    for line in lines:
        key = line.split("=", 1)[0].strip()
        present.add(key)
        if key in generated and line.strip() == f"{key}=":
            line = f"{key}={generated[key]}"
            changed = True
        out.append(line)
    for key in generated.keys() - present:
        out.append(f"{key}={generated[key]}")
        changed = True
    if changed:
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return changed


def livekit_http_port() -> int:
    """The signalling/API port from livekit.yaml (`port`)."""
    return int(yaml.safe_load(LIVEKIT_CONFIG.read_text(encoding="utf-8"))["port"])


def livekit_config_with_webhook(env: Mapping[str, str]) -> str:
    """livekit.yaml plus a `webhook` section that posts to this stack's token server, as
    YAML for `LIVEKIT_CONFIG`.

    livekit-server has environment overrides for scalar keys only (not the list
    `webhook.urls`), and reads `LIVEKIT_CONFIG` instead of the `--config` file when it is
    set; so the stack hands it the whole file with the webhook added. livekit.yaml stays
    the one file to edit, and `livekit-server --config livekit.yaml` alone still works
    (without webhooks).
    """
    config = yaml.safe_load(LIVEKIT_CONFIG.read_text(encoding="utf-8"))
    host = env["TOKEN_SERVER_HOST"]
    if host in {"", "0.0.0.0", "::", "[::]", "localhost"}:
        host = "127.0.0.1"
    config["webhook"] = {
        "api_key": env["LIVEKIT_API_KEY"],
        "urls": [f"http://{host}:{env['TOKEN_SERVER_PORT']}/api/livekit/webhook"],
    }
    return yaml.safe_dump(config, sort_keys=False)


def sip_config(env: Mapping[str, str]) -> str:
    """livekit-sip's configuration, as YAML for `SIP_CONFIG_BODY` (it reads that variable
    instead of a `--config` file). compose.yaml's `sip` service writes the same keys.

    It shares livekit-server's Redis (LiveKit's SIP API answers "SIP not connected"
    without it) and advertises `LIVEKIT_NODE_IP`. Ports: `SIP_PORT` (UDP and TCP),
    `SIP_RTP_PORTS` (UDP media), `SIP_HEALTH_PORT` and `SIP_PROMETHEUS_PORT` (HTTP, all
    interfaces; 0: no metrics).
    """
    config: dict[str, object] = {
        "api_key": env["LIVEKIT_API_KEY"],
        "api_secret": env["LIVEKIT_API_SECRET"],
        "ws_url": env["LIVEKIT_URL"],
        "redis": {"address": env["REDIS_HOST"], **({"password": env["REDIS_PASSWORD"]} if env.get("REDIS_PASSWORD") else {})},
        "sip_port": int(env["SIP_PORT"]),
        "rtp_port": env["SIP_RTP_PORTS"],
        "health_port": int(env["SIP_HEALTH_PORT"]),
        "prometheus_port": int(env.get("SIP_PROMETHEUS_PORT") or 0),
        "max_cpu_utilization": float(env["SIP_MAX_CPU_UTILIZATION"]),
        "max_active_calls": int(env["SIP_MAX_ACTIVE_CALLS"]),
        "logging": {"level": "info"},
    }
    if env.get("LIVEKIT_NODE_IP"):
        config["nat_1_to_1_ip"] = env["LIVEKIT_NODE_IP"]
    if env.get("SIP_LISTEN_IP"):
        config["listen_ip"] = env["SIP_LISTEN_IP"]
    return yaml.safe_dump(config, sort_keys=False)


def process_enabled(env: Mapping[str, str], name: str) -> bool:
    """Whether Procfile process `name` runs with `env` (see `OPTIONAL_PROCESSES`)."""
    setting = OPTIONAL_PROCESSES.get(name)
    return setting is None or env.get(setting, "").strip().lower() in {"1", "true", "yes", "on"}


def build_env(
    env_file: Path | None = ROOT / ".env",
    overrides: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every process of the stack runs with.

    Args:
        env_file: the operator's `.env` (None or missing: defaults only).
        overrides: values that win over everything (tests: ports, state dir, stand-in URL).
        base: the inherited process environment (default `os.environ`).

    Returns:
        A complete environment, including derived values: `LIVEKIT_PORT`, `LIVEKIT_URL`
        (the agent's registration URL), `LIVEKIT_KEYS` (livekit-server), `NODE_IP`,
        `REDIS_HOST`, `REDIS_URL` (call records, the token server's limits and sessions;
        with `APPLIANCE_REDIS_PASSWORD`), `REDIS_PASSWORD` (livekit-server's),
        `TOKEN_SERVER_HOST` and `AGENT_HEALTH_HOST` (default 127.0.0.1), `LIVEKIT_CONFIG` (livekit.yaml with webhooks
        to the token server, see `livekit_config_with_webhook`), `SIP_CONFIG_BODY` (with
        `SIP_ENABLED`, see `sip_config`), `AGENT_WORKERS` (default 1), `AGENT_READY_FILE`,
        `AGENT_METRICS_DIR`,
        `PYTHONPATH`, `WEB_ROOT`, `STATE_DIR`, `KNOWLEDGE_INDEX_PATH` (in `STATE_DIR`).
    """
    inherited = dict(os.environ if base is None else base)
    settings = parse_env_file(ENV_EXAMPLE)
    if env_file is not None and env_file.exists():
        settings.update(parse_env_file(env_file))
    settings.update({k: inherited[k] for k in settings if k in inherited and inherited[k]})
    settings.update(overrides or {})
    env = {**inherited, **settings}

    env.setdefault("LIVEKIT_PORT", str(livekit_http_port()))
    env.setdefault("LIVEKIT_URL", f"ws://127.0.0.1:{env['LIVEKIT_PORT']}")
    env["LIVEKIT_KEYS"] = f"{env.get('LIVEKIT_API_KEY', '')}: {env.get('LIVEKIT_API_SECRET', '')}"
    env["NODE_IP"] = env.get("LIVEKIT_NODE_IP", "")
    env["REDIS_HOST"] = f"127.0.0.1:{env['REDIS_PORT']}"
    password = env.get("APPLIANCE_REDIS_PASSWORD", "")
    if password:  # the stack's Redis requires it (Procfile); livekit-server reads REDIS_PASSWORD
        env["REDIS_PASSWORD"] = password
    if not settings.get("REDIS_URL"):  # call records, token limits and sessions: the stack's own Redis
        auth = f":{quote(password, safe='')}@" if password else ""
        env["REDIS_URL"] = f"redis://{auth}{env['REDIS_HOST']}/0"
    env["TOKEN_SERVER_HOST"] = env.get("TOKEN_SERVER_HOST") or "127.0.0.1"
    env["AGENT_HEALTH_HOST"] = env.get("AGENT_HEALTH_HOST") or "127.0.0.1"
    if env.get("LIVEKIT_API_KEY") and not inherited.get("LIVEKIT_CONFIG"):
        env["LIVEKIT_CONFIG"] = livekit_config_with_webhook(env)
    if process_enabled(env, "sip") and env.get("LIVEKIT_API_KEY"):
        env["SIP_CONFIG_BODY"] = sip_config(env)
    env.setdefault("STATE_DIR", str(ROOT / ".state"))
    env.setdefault("WEB_ROOT", str(ROOT / "web" / "dist"))
    env.setdefault("AGENT_READY_FILE", str(Path(env["STATE_DIR"]) / "agent.ready"))
    env.setdefault("AGENT_METRICS_DIR", str(Path(env["STATE_DIR"]) / "metrics"))
    env["AGENT_WORKERS"] = env.get("AGENT_WORKERS") or "1"
    env.setdefault("KNOWLEDGE_INDEX_PATH", str(Path(env["STATE_DIR"]) / "knowledge.sqlite"))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "agent"), str(ROOT / "token-server"), str(ROOT / "calls"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_env(env: Mapping[str, str]) -> list[str]:
    """Problems that stop the stack from starting, one human-readable line each."""
    problems = []
    if not env.get("LIVEKIT_API_KEY"):
        problems.append("LIVEKIT_API_KEY is empty")
    secret = env.get("LIVEKIT_API_SECRET", "")
    if len(secret) < MIN_SECRET_LENGTH or secret == LIVEKIT_DEV_SECRET:
        problems.append(f"LIVEKIT_API_SECRET must be at least {MIN_SECRET_LENGTH} random characters")
    if env.get("VIDEO_INPUT", "off") not in VIDEO_INPUTS:
        problems.append(f"VIDEO_INPUT must be one of {', '.join(VIDEO_INPUTS)}")
    problems += _agent_port_problems(env)
    return problems


def _agent_port_problems(env: Mapping[str, str]) -> list[str]:
    """AGENT_WORKERS must be a count, and worker N's health port (AGENT_HEALTH_PORT + N) free of the others."""
    try:
        workers, base = int(env.get("AGENT_WORKERS") or 1), int(env.get("AGENT_HEALTH_PORT") or 0)
    except ValueError:
        return ["AGENT_WORKERS and AGENT_HEALTH_PORT must be whole numbers"]
    if workers < 1:
        return ["AGENT_WORKERS must be at least 1"]
    others = ["WEB_PORT", "TOKEN_SERVER_PORT", "LIVEKIT_PORT", "REDIS_PORT"]
    if process_enabled(env, "sip"):
        others.append("SIP_HEALTH_PORT")
    return [f"{name}={env[name]} is one of the agent workers' health ports "
            f"(AGENT_HEALTH_PORT {base} to {base + workers - 1}, AGENT_WORKERS={workers})"
            for name in others if base and env.get(name, "").isdigit() and base <= int(env[name]) < base + workers]


def procfile_commands(path: Path = PROCFILE, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `name: command` lines of the Procfile, in order; with `env`, only the processes
    that run with it (`process_enabled`)."""
    commands: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, command = line.split(":", 1)
            if env is None or process_enabled(env, name.strip()):
                commands[name.strip()] = command.strip()
    return commands


# --- health -------------------------------------------------------------------------------


# --- run ----------------------------------------------------------------------------------


def run(env_file: Path, start_timeout_s: float = 90.0) -> int:
    """Supervise the Procfile (`supervise.StagedManager`); announce the URL once every service
    of this run is healthy.

    Refuses to start (one line each, exit status 2) on an untested honcho, a bad `.env`, a
    port already taken, or another run on the same state directory. Returns after every
    process it started has exited.
    """
    from scripts import honcho_adapter

    try:
        honcho_adapter.check_version()
    except honcho_adapter.UntestedHonchoError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    from honcho.printer import Printer

    from scripts import preflight, supervise

    ensure_env_file(env_file)
    env = build_env(env_file)
    problems = check_env(env)
    if problems:
        print(f"run: {env_file}: " + "; ".join(problems), file=sys.stderr)
        return 2
    Path(env["STATE_DIR"], "redis").mkdir(parents=True, exist_ok=True)
    if not Path(env["WEB_ROOT"], "index.html").exists():
        print(f"run: the web client is not built ({env['WEB_ROOT']}); run ./scripts/run again", file=sys.stderr)
        return 2
    lock = preflight.lock_state_dir(Path(env["STATE_DIR"]))
    if isinstance(lock, str):
        print(f"run: {lock}", file=sys.stderr)
        return 2
    conflicts = preflight.port_conflicts(env)
    if conflicts:
        print("\n".join(f"run: {line}" for line in conflicts), file=sys.stderr)
        return 2
    if not env.get("GOOGLE_API_KEY") and not env.get("GOOGLE_GENAI_USE_VERTEXAI"):
        print("run: no Gemini credentials (GOOGLE_API_KEY or Vertex AI) in .env: the agent will "
              "join calls and say it is not configured", file=sys.stderr)

    manager = supervise.StagedManager(Printer(sys.stdout), notes={
        "agent": "its workers finish their live calls first (at most AGENT_DRAIN_TIMEOUT_S)"})
    for name, command in procfile_commands(env=env).items():
        manager.add_process(name, command, env=env, cwd=str(ROOT))

    def announce() -> None:
        checks = health_checks(env)
        failing = wait_healthy(checks, start_timeout_s, should_stop=lambda: manager.stopping,
                               accept=lambda check: preflight.ports_owned(check, manager.run_processes()))
        if manager.stopping:
            return
        if failing:
            others = preflight.foreign_listeners({n: checks[n] for n in failing}, manager.run_processes())
            print(f"run: not healthy after {start_timeout_s:.0f} s: {', '.join(failing)}"
                  + "".join(f"; {line}" for line in others) + "; stopping", file=sys.stderr, flush=True)
            manager.terminate()
            return
        public = f"http://localhost:{env['WEB_PORT']}/"
        phone = (f"  Phone calls: SIP on port {env['SIP_PORT']} (UDP and TCP), media on UDP {env['SIP_RTP_PORTS']}.\n"
                 if process_enabled(env, "sip") else "")
        print(f"\n  The appliance is up. Open {public} and press Connect. (Ctrl-C stops it.)\n{phone}", flush=True)

    threading.Thread(target=announce, name="health", daemon=True).start()
    manager.loop()
    os.close(lock)
    return manager.returncode or 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the appliance in the foreground")
    run_p.add_argument("--env-file", type=Path, default=ROOT / ".env")
    run_p.add_argument("--start-timeout", type=float, default=90.0, metavar="S",
                       help="seconds every service has to become healthy (default 90)")
    sub.add_parser("init-env", help="create .env with fresh LiveKit keys if missing")
    exec_p = sub.add_parser("exec", help="run a command with the stack's environment (.env and defaults)")
    exec_p.add_argument("argv", nargs=argparse.REMAINDER, help="-- command [arguments]")
    args = parser.parse_args(argv)
    if args.command == "init-env":
        ensure_env_file(ROOT / ".env")
        return 0
    if args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("exec needs a command")
        os.chdir(ROOT)
        os.execvpe(command[0], command, build_env())
    return run(args.env_file, args.start_timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
