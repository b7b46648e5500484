"""`./scripts/doctor`: why does this machine's appliance not work? One line per check.

Each check prints `✓ name: what was seen` or `✗ name: what is wrong — fix: what to do`, and
the exit status is 1 when any check failed (2: the `.env` cannot be read). The checks:

- keys: the LiveKit key and secret, the bearer keys (32+ characters each), Gemini credentials;
- gemini: a real Live API setup handshake with the configured endpoint (`doctor_net.py`),
  and the clock against that endpoint's `Date` header;
- one line per service of the native run (`stack.health_checks`), or of the compose stack
  with `--compose` (`compose_health_checks`): it answers, and its port is held by the
  program expected there, not by something else;
- node-ip, media-udp, media-tcp: `LIVEKIT_NODE_IP` is an address of this machine (or a cloud
  VM's 1:1 public address), and an ICE session with livekit-server through that address
  succeeds over UDP; TCP `rtc.tcp_port` accepts connections there (`doctor_net.py`);
- tls: `PUBLIC_HOST`'s certificate covers the name and does not expire within 14 days;
- redis: answers, with persistence (appendonly) on; disk: free space under `STATE_DIR`.

Settings come from `.env` exactly as `./scripts/run` reads them (`stack.build_env`). In
compose (`docker compose run --rm doctor`, a container on the host's network) they come from
the environment compose gives it from `.env`, and there is no disk check.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from scripts import health, procs, stack
from voice_calls import admission

#: Bearer keys (TOKEN_SHARED_KEYS, RECORDS_API_KEYS) shorter than this are refused (characters).
MIN_BEARER_KEY_LENGTH = 32
#: A certificate expiring sooner than this fails the TLS check (days).
CERT_MIN_DAYS = 14
#: Less free disk than this under STATE_DIR fails (bytes): Redis' append-only file, call records.
MIN_FREE_BYTES = 1 << 30
#: The program expected on each service's port (a word of its command line).
PROGRAMS = {"redis": "redis-server", "livekit": "livekit-server", "token-server": "gunicorn",
            "agent": "voice_agent", "web": "caddy", "sip": "livekit-sip"}


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: `seen` says what was found, `fix` what to do when not `ok`."""

    check: str
    ok: bool
    seen: str
    fix: str = ""

    def line(self) -> str:
        """`✓ check: seen` or `✗ check: seen — fix: fix`."""
        return f"✓ {self.check}: {self.seen}" if self.ok else f"✗ {self.check}: {self.seen} — fix: {self.fix}"


def passed(check: str, seen: str) -> Finding:
    return Finding(check, True, seen)


def failed(check: str, seen: str, fix: str) -> Finding:
    return Finding(check, False, seen, fix)


# --- keys ---------------------------------------------------------------------------------


def check_keys(env: Mapping[str, str]) -> list[Finding]:
    """LiveKit's key and secret (`stack.check_env`), bearer keys, Gemini credentials."""
    findings = []
    problems = [p for p in stack.check_env(env) if "LIVEKIT" in p]
    findings.append(failed("livekit-keys", "; ".join(problems), "run ./scripts/init-env, or set them in .env")
                    if problems else passed("livekit-keys", "LIVEKIT_API_KEY set, LIVEKIT_API_SECRET strong"))
    for name in ("TOKEN_SHARED_KEYS", "RECORDS_API_KEYS"):
        keys = [k.strip() for k in env.get(name, "").split(",") if k.strip()]
        weak = [n for n, key in enumerate(keys, 1) if len(key) < MIN_BEARER_KEY_LENGTH]
        if weak:
            findings.append(failed(name.lower().replace("_", "-"), f"key {', '.join(map(str, weak))} of {len(keys)} "
                                   f"is shorter than {MIN_BEARER_KEY_LENGTH} characters",
                                   f"replace it with `openssl rand -base64 36` in .env ({name})"))
    if env.get("GOOGLE_API_KEY"):
        findings.append(passed("gemini-credentials", "GOOGLE_API_KEY set"))
    elif env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in {"1", "true"}:
        project = env.get("GOOGLE_CLOUD_PROJECT")
        findings.append(passed("gemini-credentials", f"Vertex AI, project {project}") if project else failed(
            "gemini-credentials", "GOOGLE_GENAI_USE_VERTEXAI is set without GOOGLE_CLOUD_PROJECT",
            "set GOOGLE_CLOUD_PROJECT (and GOOGLE_APPLICATION_CREDENTIALS) in .env"))
    else:
        findings.append(failed("gemini-credentials", "no GOOGLE_API_KEY and no Vertex AI settings: calls are told "
                               "the agent is not configured", "set GOOGLE_API_KEY in .env"))
    return findings


# --- services -----------------------------------------------------------------------------


def _service_ports(name: str, check: stack.HealthCheck, env: Mapping[str, str]) -> list[int]:
    ports = check.ports()
    if name == "agent" and not ports and int(env.get("AGENT_HEALTH_PORT") or 0):
        base = int(env["AGENT_HEALTH_PORT"])
        ports = [base + n for n in range(int(env.get("AGENT_WORKERS") or 1))]
    return ports


def compose_health_checks(env: Mapping[str, str]) -> dict[str, stack.HealthCheck]:
    """The compose stack's services, as the doctor's container (on the host's network) sees
    them: the native run's checks where compose uses the same ports (Redis, livekit-server,
    the token server, livekit-sip); the front door's health port (`WEB_HEALTH_PORT`, which
    compose.yaml passes in); agent workers by the capacity they publish in Redis once LiveKit
    has registered them (their health ports are any free port, named inside their containers)."""
    checks = stack.health_checks(env)
    web_port = int(env.get("WEB_HEALTH_PORT") or 0)
    web = f"http://127.0.0.1:{web_port}/healthz"  # docker/Caddyfile's health site
    checks["web"] = stack.HealthCheck("web", lambda: health.http_ok(web), f"GET {web}", lambda: [web_port])
    checks["agent"] = stack.HealthCheck(
        "agent", lambda: registered_workers(env) > 0,
        f"agent workers registered with LiveKit (their capacity in Redis, {admission.WORKER_PREFIX}*)",
    )
    return checks


def registered_workers(env: Mapping[str, str]) -> int:
    """How many agent workers publish their capacity in Redis now, draining ones not counted
    (`voice_calls.admission`); 0 when Redis cannot be read."""
    import redis

    try:
        client = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=3, socket_connect_timeout=3,
                                      decode_responses=True)
        ids = sorted(client.smembers(admission.WORKERS))
        values = client.mget([admission.worker_key(i) for i in ids]) if ids else []
    except redis.RedisError:
        return 0
    return sum(1 for value in values if value and not json.loads(value).get("draining"))


def check_services(env: Mapping[str, str], compose: bool = False) -> list[Finding]:
    """Each service answers, on ports held by the program expected there (when the doctor can
    see the processes: not from a container)."""
    start, logs = ("docker compose up -d", "docker compose logs {name}") if compose else \
        ("./scripts/run", "its log lines in ./scripts/run's output")
    findings = []
    for name, check in (compose_health_checks(env) if compose else stack.health_checks(env)).items():
        ports = _service_ports(name, check, env)
        uses = [u for u in procs.port_uses(ports) if not u.udp]
        strangers = [u for u in uses if u.pid is not None and PROGRAMS[name] not in procs.describe(u.pid, 400)]
        if strangers:
            use = strangers[0]
            findings.append(failed(name, f"port {use.port} is held by {procs.describe(use.pid)}, not {PROGRAMS[name]}",
                                   "stop that process, or move the port in .env"))
        elif check.probe():
            findings.append(passed(name, f"healthy ({check.describe})"))
        elif uses:
            findings.append(failed(name, f"port {uses[0].port} is open but {check.describe} fails",
                                   f"see {logs.format(name=name)}"))
        else:
            where = f"nothing listens on port {', '.join(map(str, ports))}" if ports else "none found"
            findings.append(failed(name, f"not running: {check.describe} fails and {where}", f"start it with {start}"))
    return findings


# --- Redis, disk --------------------------------------------------------------------------


def check_redis(env: Mapping[str, str]) -> Finding:
    """Redis answers PING, with the append-only file on (a restart keeps call records and budgets)."""
    import redis

    url = env.get("REDIS_URL") or f"redis://{env['REDIS_HOST']}/0"
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        appendonly = client.config_get("appendonly").get("appendonly")
    except redis.RedisError as exc:
        return failed("redis", f"{where}: {exc}", "start it with ./scripts/run, or fix REDIS_URL in .env")
    if appendonly != "yes":
        return failed("redis", f"{where} answers, but persistence is off (appendonly {appendonly})",
                      "run Redis with --appendonly yes (the Procfile and compose.yaml do)")
    return passed("redis", f"{where} answers, appendonly on")


def check_disk(env: Mapping[str, str]) -> Finding:
    """Free space on the file system of STATE_DIR."""
    path = Path(env["STATE_DIR"])
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    seen = f"{free / (1 << 30):.1f} GiB free under {path}"
    return passed("disk", seen) if free >= MIN_FREE_BYTES else failed(
        "disk", seen, f"free at least {MIN_FREE_BYTES >> 30} GiB (old logs, docker images)")


# --- TLS ----------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tls(env: Mapping[str, str], now: datetime | None = None) -> Finding:
    """Browsers grant the microphone to secure origins only: https://PUBLIC_HOST with a
    certificate that covers the name and lasts at least `CERT_MIN_DAYS`; http://localhost
    is secure for a browser on this machine only."""
    from cryptography import x509

    host, port = env.get("PUBLIC_HOST") or "localhost", int(env.get("HTTPS_PORT") or 443)
    if _is_loopback(host):
        return passed("tls", f"PUBLIC_HOST={host}: a secure origin for a browser on this machine only; "
                      "set PUBLIC_HOST to this machine's name for other devices")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # read it; judged below
    try:
        with socket.create_connection((host, port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        return failed("tls", f"no TLS on {host}:{port}: {exc}",
                      "start the front door (docker compose up), and open HTTPS_PORT")
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = [str(n) for n in names.get_values_for_type(x509.DNSName)] + \
            [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        covered = []
    if not any(ssl_match(pattern, host) for pattern in covered):
        return failed("tls", f"the certificate on {host}:{port} is for {', '.join(covered) or 'no names'}, not {host}",
                      "set PUBLIC_HOST to the name the certificate is for, or remove the old certificate")
    left = cert.not_valid_after_utc - (now or datetime.now(timezone.utc))
    if left.days < CERT_MIN_DAYS:
        return failed("tls", f"the certificate for {host} expires in {left.days} days",
                      "renew it (Caddy renews publicly trusted ones itself when ports 80 and 443 reach it)")
    return passed("tls", f"certificate for {host} valid {left.days} more days")


def ssl_match(pattern: str, host: str) -> bool:
    """Whether certificate name `pattern` (`*.example.org` allowed) covers `host`."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


# --- the run ------------------------------------------------------------------------------


async def diagnose(env: Mapping[str, str], model_timeout_s: float = 10.0,
                   media_timeout_s: float = 20.0, compose: bool = False) -> AsyncIterator[Finding]:
    """Every check, in the order printed (each as soon as it is done). `compose`: the services
    are the compose stack's (`compose_health_checks`), and there is no `STATE_DIR` to check
    the disk of (compose keeps its data in Docker volumes)."""
    from scripts import doctor_net

    keys = check_keys(env)
    if keys[0].ok:
        keys[0] = await doctor_net.check_livekit_keys(env, keys[0])
    for finding in keys:
        yield finding
    for finding in await doctor_net.check_model(env, model_timeout_s):
        yield finding
    for finding in check_services(env, compose):
        yield finding
    yield check_redis(env)
    yield doctor_net.check_node_ip(env)
    if keys[0].ok:
        for finding in await doctor_net.check_media(env, media_timeout_s):
            yield finding
    else:
        yield failed("media-udp", "not tried without keys livekit-server accepts", "fix the livekit-keys line first")
    yield check_tls(env)
    if not compose:
        yield check_disk(env)


async def report(env: Mapping[str, str], compose: bool = False) -> int:
    """Print every finding's line; the number that failed."""
    bad = total = 0
    async for finding in diagnose(env, compose=compose):
        print(finding.line(), flush=True)
        total, bad = total + 1, bad + (not finding.ok)
    print(f"doctor: {total - bad} passed, {bad} failed")
    return bad


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=stack.ROOT / ".env")
    parser.add_argument("--compose", action="store_true",
                        help="check the compose stack, with .env's settings in the environment "
                             "(`docker compose run --rm doctor` passes them; --env-file is not read)")
    args = parser.parse_args(argv)
    if not args.compose and not args.env_file.exists():
        print(f"✗ env: {args.env_file} does not exist — fix: run ./scripts/run once (it creates it), "
              "or ./scripts/init-env")
        return 2
    logging.disable(logging.CRITICAL)  # one line per check: the libraries' own logs are not for here
    try:
        env = stack.build_env(None if args.compose else args.env_file)
    except (OSError, ValueError, KeyError) as exc:
        print(f"✗ env: {args.env_file} cannot be read: {exc} — fix: compare it with .env.example")
        return 2
    return 1 if asyncio.run(report(env, compose=args.compose)) else 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    # livekit's native client (the media check) can abort the interpreter's exit while its
    # threads are torn down; nothing is left to clean up here.
    os._exit(status)
