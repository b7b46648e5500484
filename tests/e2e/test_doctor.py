"""`./scripts/doctor` against the real stack: all ✓ when it works, and each fault named.

The doctor reads a `.env` written from the test stack's settings; a fault is made either in
the stack (a stopped service, the model endpoint refusing the key) or in the doctor's `.env`
only (a wrong node address, a port nothing listens on, a key livekit-server does not know),
which is what the doctor sees when `.env` and the machine disagree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import stack
from tests.e2e.harness import ProcessStack
from tests.ports import free_port
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e

#: Settings of the test stack that the doctor's `.env` carries (the rest are derived).
DERIVED_FROM = {"LIVEKIT_PORT", "LIVEKIT_RTC_TCP_PORT", "STATE_DIR", "GEMINI_BASE_URL", "GEMINI_CA_FILE"}


def doctor(stack_env: dict[str, str], tmp_path: Path, **changes: str) -> tuple[int, dict[str, str]]:
    """Run ./scripts/doctor with a `.env` of the stack's settings plus `changes`.

    Returns:
        The exit status, and each printed check's line by check name.
    """
    keys = set(stack.parse_env_file(stack.ENV_EXAMPLE)) | DERIVED_FROM
    values = {k: v for k, v in stack_env.items() if k in keys} | changes
    env_file = tmp_path / f"doctor-{len(list(tmp_path.glob('doctor-*')))}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    inherited = {k: v for k, v in os.environ.items() if k not in keys}
    done = subprocess.run([str(stack.ROOT / "scripts" / "doctor"), "--env-file", str(env_file)], env=inherited,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.stderr == "", done.stderr
    return done.returncode, findings(done.stdout)


def findings(stdout: str) -> dict[str, str]:
    """The doctor's report as each check's line by check name (its last line is the tally)."""
    lines = stdout.splitlines()
    assert lines and lines[-1].startswith("doctor: "), stdout
    found = {}
    for line in lines[:-1]:
        assert line[:2] in {"✓ ", "✗ "}, line
        found[line[2:].split(":", 1)[0]] = line
    return found


def test_a_working_stack_passes_every_check(native_stack: ProcessStack, tmp_path: Path) -> None:
    status, found = doctor(native_stack.env, tmp_path)
    failing = [line for line in found.values() if line.startswith("✗")]
    assert status == 0 and failing == [], "\n".join(found.values())
    for name in ("livekit-keys", "gemini-credentials", "gemini", "clock", "redis", "livekit", "token-server",
                 "agent", "web", "node-ip", "media-udp", "media-tcp", "tls", "disk"):
        assert name in found, f"no {name} line: {found}"
    assert found["media-udp"].startswith("✓ media-udp: ICE (STUN binding) answered over UDP at 127.0.0.1:")
    assert found["gemini"].startswith(f"✓ gemini: Live API setup with {native_stack.env['GEMINI_BASE_URL']}")


def test_a_stopped_service_and_a_port_taken_by_another_program_are_named(
    native_stack: ProcessStack, tmp_path: Path
) -> None:
    port = free_port()
    squatter = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    native_stack.stop("token-server")
    try:
        status, found = doctor(native_stack.env, tmp_path, WEB_PORT=str(port))
    finally:
        native_stack.start(["token-server"])
        squatter.kill()
        squatter.wait()
    assert status == 1
    assert found["token-server"] == (
        f"✗ token-server: not running: GET http://127.0.0.1:{native_stack.env['TOKEN_SERVER_PORT']}/healthz fails "
        f"and nothing listens on port {native_stack.env['TOKEN_SERVER_PORT']} — fix: start it with ./scripts/run")
    assert found["web"].startswith(f"✗ web: port {port} is held by pid {squatter.pid} ({sys.executable} -m http.server")
    assert found["web"].endswith("not caddy — fix: stop that process, or move the port in .env")
    assert found["redis"].startswith("✓ redis")


def test_a_wrong_node_ip_fails_the_address_and_the_media_path(native_stack: ProcessStack, tmp_path: Path) -> None:
    status, found = doctor(native_stack.env, tmp_path, LIVEKIT_NODE_IP="192.0.2.1")
    assert status == 1
    assert found["node-ip"].startswith("✗ node-ip: LIVEKIT_NODE_IP=192.0.2.1 is not an address of this machine")
    # livekit-server advertises 127.0.0.1: ICE succeeds there only, never at the configured address.
    assert found["media-udp"].startswith("✗ media-udp: no ICE answer over UDP at 192.0.2.1 (succeeded: ")
    assert "127.0.0.1:" in found["media-udp"]
    assert "fix: open UDP 50000-60000 to this machine" in found["media-udp"]
    assert found["media-tcp"].startswith(f"✗ media-tcp: 192.0.2.1:{native_stack.env['LIVEKIT_RTC_TCP_PORT']}/tcp")


def test_a_closed_ice_tcp_port_is_named(native_stack: ProcessStack, tmp_path: Path) -> None:
    closed = free_port()
    status, found = doctor(native_stack.env, tmp_path, LIVEKIT_RTC_TCP_PORT=str(closed))
    assert status == 1
    assert found["media-tcp"] == (f"✗ media-tcp: 127.0.0.1:{closed}/tcp: Connection refused — fix: open TCP "
                                  f"{closed} to this machine (ICE over TCP when UDP is blocked)")
    assert found["media-udp"].startswith("✓")


def test_keys_the_services_refuse_are_named(
    native_stack: ProcessStack, tmp_path: Path, standin: GeminiLiveStandin
) -> None:
    standin.refuse_handshakes(403)
    try:
        status, found = doctor(native_stack.env, tmp_path, LIVEKIT_API_SECRET="x" * 48)
    finally:
        standin.accept_handshakes()
    assert status == 1
    assert found["gemini"].startswith(f"✗ gemini: the Live API setup with {native_stack.env['GEMINI_BASE_URL']} failed: ")
    assert "403" in found["gemini"] and found["gemini"].endswith(
        "— fix: check GOOGLE_API_KEY (or Vertex AI credentials), GEMINI_MODEL and GEMINI_BASE_URL")
    assert found["livekit-keys"].startswith("✗ livekit-keys: livekit-server refuses LIVEKIT_API_KEY/LIVEKIT_API_SECRET")


def test_redis_without_persistence_is_named(native_stack: ProcessStack, tmp_path: Path) -> None:
    import redis

    client = redis.Redis.from_url(native_stack.env["REDIS_URL"])
    client.config_set("appendonly", "no")
    try:
        status, found = doctor(native_stack.env, tmp_path)
    finally:
        client.config_set("appendonly", "yes")
    assert status == 1
    assert found["redis"] == (f"✗ redis: {native_stack.env['REDIS_HOST']}/0 answers, but persistence is off "
                              "(appendonly no) — fix: run Redis with --appendonly yes (the Procfile and compose.yaml do)")
