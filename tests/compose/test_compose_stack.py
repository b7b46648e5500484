"""The appliance as `docker compose up` runs it: real images under a real Docker engine.

Run by `scripts/test-compose` (skipped otherwise). The same whole-call checks as the native
stack's end-to-end test run through the HTTPS front door (Caddy, internal CA), with the
agent container talking to the Gemini Live stand-in on this machine.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.compose.harness import ComposeStack
from tests.e2e.test_call import check_a_whole_call
from tests.standins.gemini_live import GeminiLiveStandin

#: Bringing the stack up is part of the first test's setup.
pytestmark = [pytest.mark.e2e, pytest.mark.compose, pytest.mark.timeout(900)]

#: The Redis stream where the token server records LiveKit's webhook events.
WEBHOOK_EVENTS = "token-server:livekit-events"
#: Services whose ports must not be reachable from other machines (host networking).
LOOPBACK_ONLY = ("REDIS_PORT", "LIVEKIT_PORT", "TOKEN_SERVER_PORT", "AGENT_HEALTH_PORT", "WEB_HEALTH_PORT")


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


def _listening(port: int) -> set[str]:
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


def test_internal_ports_listen_on_loopback_only(compose_stack: ComposeStack) -> None:
    env = compose_stack.env
    for name in LOOPBACK_ONLY:
        listeners = _listening(int(env[name]))
        assert listeners, f"nothing listens on {name}={env[name]}"
        assert listeners <= {"127.0.0.1", "::1"}, f"{name} listens on {listeners}"
    assert _listening(int(env["HTTPS_PORT"])) - {"127.0.0.1", "::1"}, "the front door is not public"


def test_redis_requires_its_password(compose_stack: ComposeStack) -> None:
    with socket.create_connection(("127.0.0.1", int(compose_stack.env["REDIS_PORT"])), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"-NOAUTH")


def test_every_service_runs_unprivileged(compose_stack: ComposeStack) -> None:
    for service in compose_stack.containers():
        pid = compose_stack.inspect(service)["State"]["Pid"]
        uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) != 0, f"{service} runs as root"
