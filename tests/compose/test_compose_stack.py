"""The appliance as `docker compose up` runs it: real images under a real Docker engine.

Run by `scripts/test-compose` (skipped otherwise). The same whole-call checks as the native
stack's end-to-end test run through the HTTPS front door (Caddy, internal CA), with the
agent container talking to the Gemini Live stand-in on this machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.compose.harness import ComposeStack
from tests.e2e.harness import listening_addresses
from tests.e2e.test_call import check_a_whole_call
from tests.e2e.test_doctor import findings
from tests.e2e.test_phone import CALLER, check_an_inbound_call
from tests.standins.gemini_live import GeminiLiveStandin

#: Bringing the stack up is part of the first test's setup.
pytestmark = [pytest.mark.e2e, pytest.mark.compose, pytest.mark.timeout(900)]

#: The Redis stream where the token server records LiveKit's webhook events.
WEBHOOK_EVENTS = "token-server:livekit-events"
#: Services whose ports must not be reachable from other machines (host networking).
LOOPBACK_ONLY = ("REDIS_PORT", "LIVEKIT_PORT", "TOKEN_SERVER_PORT", "WEB_HEALTH_PORT")
#: Where the agent image writes its ready file (docker/services.Dockerfile).
AGENT_READY_FILE = "/tmp/voice-agent.ready"


async def test_a_call_through_the_https_front_door(compose_stack: ComposeStack, standin: GeminiLiveStandin) -> None:
    started = time.monotonic()
    await check_a_whole_call(compose_stack.token_url, standin)
    compose_stack.timings["call_test_s"] = time.monotonic() - started

    # LiveKit's webhooks reached the token server, which recorded the call in Redis.
    env = compose_stack.env
    store = redis.Redis(host="127.0.0.1", port=int(env["REDIS_PORT"]), password=env["APPLIANCE_REDIS_PASSWORD"],
                        decode_responses=True)
    deadline = time.monotonic() + 15
    while True:
        events = {fields["event"] for _, fields in store.xrange(WEBHOOK_EVENTS)}
        if {"room_started", "participant_joined"} <= events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"room_started", "participant_joined"} <= events, events


def test_a_phone_call_through_the_telephony_profile(
    compose_stack: ComposeStack, standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    """sip-provision provisioned the trunk, and the sip container bridges the same inbound call
    as the native stack's (tests/e2e/test_phone.py); the agent records it with the number."""
    started = time.monotonic()
    call = check_an_inbound_call(int(compose_stack.env["SIP_PORT"]), standin, tmp_path)
    compose_stack.timings["phone_call_test_s"] = time.monotonic() - started

    env = compose_stack.env
    store = redis.Redis(host="127.0.0.1", port=int(env["REDIS_PORT"]), password=env["APPLIANCE_REDIS_PASSWORD"],
                        decode_responses=True)
    deadline = time.monotonic() + 20
    while True:
        rooms = store.zrangebyscore("voice:calls", call.started_at - 1, "+inf")
        phone = [store.hgetall(f"voice:call:{room}") for room in rooms]
        phone = [r for r in phone if r.get("phone_number") == CALLER]
        if (phone and phone[-1].get("ended_at")) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert phone and phone[-1]["direction"] == "inbound" and phone[-1]["end_reason"] == "caller left", phone


def test_the_front_door_serves_the_page_over_https_and_redirects_http(compose_stack: ComposeStack) -> None:
    with urllib.request.urlopen(compose_stack.origin + "/", timeout=10) as response:
        page = response.read().decode()
        headers = response.headers
    assert response.status == 200 and "<html" in page.lower()
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "microphone=(self)" in headers["Permissions-Policy"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    http = f"http://localhost:{compose_stack.env['HTTP_PORT']}/"
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(http, timeout=10)
    assert redirect.value.code in (301, 308)
    assert redirect.value.headers["Location"].startswith("https://localhost")


def test_the_certificate_is_caddys_internal_ca(compose_stack: ComposeStack) -> None:
    """The front door's certificate chains to Caddy's internal CA (the root the test trusts)."""
    env = compose_stack.env
    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    with socket.create_connection(("127.0.0.1", int(env["HTTPS_PORT"])), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            issuer = dict(item[0] for item in tls.getpeercert()["issuer"])
    assert "Caddy Local Authority" in issuer.get("commonName", "")


def _agent_workers(compose_stack: ComposeStack) -> dict[str, tuple[str, int]]:
    """Container id -> (worker id, health port) from each agent replica's ready file."""
    workers = {}
    for container in compose_stack.replicas("agent"):
        out = subprocess.run(["docker", "exec", container, "cat", AGENT_READY_FILE],
                             capture_output=True, text=True, check=False).stdout
        if out.strip():
            ready = json.loads(out)
            workers[container] = (ready["worker_id"], int(ready["health_port"]))
    return workers


def test_internal_ports_listen_on_loopback_only(compose_stack: ComposeStack) -> None:
    env = compose_stack.env
    ports = {name: int(env[name]) for name in LOOPBACK_ONLY}
    ports.update({f"agent {c[:12]} health": port for c, (_, port) in _agent_workers(compose_stack).items()})
    assert any(name.startswith("agent") for name in ports), "no agent ready file"
    for name, port in ports.items():
        listeners = listening_addresses(port)
        assert listeners, f"nothing listens on {name}={port}"
        assert listeners <= {"127.0.0.1", "::1"}, f"{name} listens on {listeners}"
    assert listening_addresses(int(env["HTTPS_PORT"])) - {"127.0.0.1", "::1"}, "the front door is not public"


def test_redis_requires_its_password(compose_stack: ComposeStack) -> None:
    with socket.create_connection(("127.0.0.1", int(compose_stack.env["REDIS_PORT"])), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"-NOAUTH")


def test_every_service_runs_unprivileged(compose_stack: ComposeStack) -> None:
    for service in compose_stack.containers():
        state = compose_stack.inspect(service)
        if not state["State"]["Running"]:  # a one-shot job (sip-provision): its image's user
            assert state["Config"]["User"] not in ("", "0", "root"), f"{service} runs as root"
            continue
        pid = state["State"]["Pid"]
        uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) != 0, f"{service} runs as root"


def test_the_doctor_checks_the_compose_stack(compose_stack: ComposeStack) -> None:
    """`docker compose run --rm doctor`: every check passes on the working stack, and a wrong
    LIVEKIT_NODE_IP (what the doctor sees when .env and the machine disagree) is named."""
    done = compose_stack.run("run", "--rm", "-T", "doctor", timeout=240, check=False)
    found = findings(done.stdout)
    failing = [line for line in found.values() if line.startswith("✗")]
    assert done.returncode == 0 and failing == [], done.stdout + done.stderr[-2000:]
    for name in ("livekit-keys", "gemini", "clock", "redis", "livekit", "token-server", "agent", "web",
                 "node-ip", "media-udp", "media-tcp", "tls"):
        assert name in found, f"no {name} line: {found}"
    assert found["agent"].startswith("✓ agent: healthy (agent workers registered with LiveKit")
    assert found["media-udp"].startswith("✓ media-udp: ICE (STUN binding) answered over UDP at 127.0.0.1:")

    wrong = compose_stack.run("run", "--rm", "-T", "-e", "LIVEKIT_NODE_IP=192.0.2.10", "doctor", timeout=240,
                              check=False)
    found = findings(wrong.stdout)
    assert wrong.returncode == 1, wrong.stdout
    assert found["node-ip"].startswith("✗ node-ip: LIVEKIT_NODE_IP=192.0.2.10 is not an address of this machine"), \
        found["node-ip"]


def test_agent_scales_to_three_replicas_without_port_clashes(compose_stack: ComposeStack) -> None:
    """`up -d --scale agent=3`: every replica healthy and registered with LiveKit as its own
    worker, on its own loopback health port; back to one replica afterwards."""
    compose_stack.run("up", "-d", "--no-build", "--no-deps", "--scale", "agent=3", "agent", timeout=300)
    try:
        deadline = time.monotonic() + 180
        while True:
            states = [compose_stack.container_health(c) for c in compose_stack.replicas("agent")]
            if len(states) == 3 and all(state == "healthy" for state in states):
                break
            assert time.monotonic() < deadline, f"agent replicas: {states}\n{compose_stack.logs_tail()}"
            assert not {"exited", "dead", "unhealthy"} & set(states), f"{states}\n{compose_stack.logs_tail()}"
            time.sleep(1)
        workers = _agent_workers(compose_stack)
        assert len(workers) == 3
        assert len({worker_id for worker_id, _ in workers.values()}) == 3, "three distinct registrations"
        assert len({port for _, port in workers.values()}) == 3, "three health ports"
        for _, port in workers.values():
            assert listening_addresses(port) <= {"127.0.0.1", "::1"}
    finally:
        compose_stack.run("up", "-d", "--no-build", "--no-deps", "--scale", "agent=1", "agent", timeout=300,
                          check=False)
