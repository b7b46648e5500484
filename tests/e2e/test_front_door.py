"""Both front doors (Caddy): whom they answer, the headers they send, what they log.

The native front door is the session stack's `web` process (the Procfile's `Caddyfile`);
more of them start here with other settings (`VIDEO_INPUT`). The compose front door
(`docker/Caddyfile`, what the `web` image runs) runs here natively too, with Caddy's own CA
for `localhost` as in a compose trial, in front of the same token server and
livekit-server; `scripts/test-compose` runs it in its container.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from scripts import stack
from tests.e2e.harness import ProcessStack, more_processes
from tests.ports import free_port

pytestmark = pytest.mark.e2e

#: What the browser may use on the page, by `VIDEO_INPUT` (the default is `off`).
PERMISSIONS = {
    "off": "camera=(), display-capture=(), geolocation=(), microphone=(self)",
    "camera": "camera=(self), display-capture=(), geolocation=(), microphone=(self)",
    "screen": "camera=(), display-capture=(self), geolocation=(), microphone=(self)",
    "both": "camera=(self), display-capture=(self), geolocation=(), microphone=(self)",
}
#: The token server's own policy for its JSON answers, which the front door keeps.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
FOREIGN_HOSTS = ("evil.example", "203.0.113.7", "localhost.evil.example", "127.0.0.1.nip.io")


@dataclass
class ComposeFrontDoor:
    """docker/Caddyfile running natively: its HTTPS origin, its CA and its log."""

    url: str
    ca_file: Path
    log: Path


@contextmanager
def compose_front_door(native_stack: ProcessStack, state: Path, **env: str) -> Iterator[ComposeFrontDoor]:
    """The compose front door (docker/Caddyfile, as the `web` image runs it) for
    ``PUBLIC_HOST=localhost``, in front of `native_stack`'s token server and livekit-server."""
    https_port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(state),
        "XDG_DATA_HOME": str(state / "data"),
        "XDG_CONFIG_HOME": str(state / "config"),
        "PUBLIC_HOST": "localhost",
        "HTTPS_PORT": str(https_port),
        "HTTP_PORT": str(free_port()),
        "WEB_HEALTH_PORT": str(free_port()),
        "TOKEN_SERVER_UPSTREAM": f"127.0.0.1:{native_stack.env['TOKEN_SERVER_PORT']}",
        "LIVEKIT_UPSTREAM": f"127.0.0.1:{native_stack.env['LIVEKIT_PORT']}",
        "WEB_ROOT": native_stack.env["WEB_ROOT"],  # the image serves the same bundle from /srv
        **env,
    }
    log = native_stack.log_dir / f"compose-front-door-{https_port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["caddy", "run", "--adapter", "caddyfile", "--config", str(stack.ROOT / "docker" / "Caddyfile")],
            env=environment, cwd=state, stdout=out, stderr=subprocess.STDOUT,
        )
    ca_file = state / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    door = ComposeFrontDoor(f"https://localhost:{https_port}", ca_file, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{door.url}/api/openapi.yaml", verify=str(ca_file), timeout=5).raise_for_status()
                break
            except (requests.RequestException, OSError):
                assert process.poll() is None, f"caddy exited: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "the compose front door did not come up"
                time.sleep(0.3)
        yield door
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def compose_door(native_stack: ProcessStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeFrontDoor]:
    with compose_front_door(native_stack, tmp_path_factory.mktemp("compose-front-door")) as door:
        yield door


# --- whom they answer ------------------------------------------------------------------------


def test_the_native_front_door_answers_only_this_machines_names(native_stack: ProcessStack) -> None:
    """A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    port = native_stack.env["WEB_PORT"]
    for host in ("localhost", "127.0.0.1", "[::1]", "LocalHost"):
        issued = requests.post(native_stack.token_url, json={}, headers={"Host": f"{host}:{port}"}, timeout=10)
        assert issued.status_code == 201, (host, issued.text)
        assert requests.get(native_stack.web_url, headers={"Host": host}, timeout=10).status_code == 200
    for host in FOREIGN_HOSTS:
        for method, path in (("POST", "/api/token"), ("GET", "/"), ("GET", "/rtc/validate")):
            refused = requests.request(method, f"{native_stack.web_url}{path}", json={}, timeout=10,
                                       headers={"Host": f"{host}:{port}"})
            assert refused.status_code == 421, (host, path, refused.status_code)
            assert "participant_token" not in refused.text


def test_the_compose_front_door_answers_only_public_host(compose_door: ComposeFrontDoor) -> None:
    issued = requests.post(f"{compose_door.url}/api/token", json={}, verify=str(compose_door.ca_file), timeout=10)
    assert issued.status_code == 201, issued.text
    for host in FOREIGN_HOSTS:
        try:
            answer = requests.post(f"{compose_door.url}/api/token", json={}, headers={"Host": host},
                                   verify=str(compose_door.ca_file), timeout=10)
        except requests.exceptions.SSLError:
            continue  # no certificate for that name: refused in the handshake
        assert answer.status_code != 201 and "participant_token" not in answer.text, (host, answer.status_code)


# --- headers ---------------------------------------------------------------------------------


def check_page_headers(response: requests.Response, video_input: str) -> None:
    assert response.status_code == 200, response.status_code
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert response.headers["Permissions-Policy"] == PERMISSIONS[video_input]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_page_cannot_be_framed_and_may_use_the_microphone_only(
    native_stack: ProcessStack, compose_door: ComposeFrontDoor
) -> None:
    page = requests.get(native_stack.web_url, timeout=10)
    check_page_headers(page, "off")
    assert "<html" in page.text.lower()
    check_page_headers(requests.get(compose_door.url, verify=str(compose_door.ca_file), timeout=10), "off")
    # The token server's stricter policy for its own answers stays as it was.
    for api in (requests.get(f"{native_stack.web_url}/api/openapi.yaml", timeout=10),
                requests.get(f"{compose_door.url}/api/openapi.yaml", verify=str(compose_door.ca_file), timeout=10)):
        assert api.headers["Content-Security-Policy"] == API_CSP  # one value, not two joined


@pytest.mark.parametrize("video_input", ["off", "camera", "screen", "both"])
def test_the_permissions_policy_follows_video_input(
    native_stack: ProcessStack, tmp_path: Path, video_input: str
) -> None:
    overrides = {"WEB_PORT": str(free_port()), "VIDEO_INPUT": video_input}
    with more_processes(native_stack, ["web"], overrides, native_stack.log_dir / f"web-{video_input}") as door:
        check_page_headers(requests.get(door.web_url, timeout=10), video_input)
    with compose_front_door(native_stack, tmp_path, VIDEO_INPUT=video_input) as compose:
        check_page_headers(requests.get(compose.url, verify=str(compose.ca_file), timeout=10), video_input)


def test_an_unknown_video_input_is_refused_before_anything_starts() -> None:
    env = stack.build_env(env_file=None, overrides={"VIDEO_INPUT": "microphone", "LIVEKIT_API_KEY": "APIx",
                                                    "LIVEKIT_API_SECRET": "s" * 8 + "e" * 8 + "c" * 8 + "r" * 8})
    assert any("VIDEO_INPUT" in problem for problem in stack.check_env(env))


# --- what the compose front door logs ----------------------------------------------------------


def test_the_compose_front_door_logs_no_access_token(compose_door: ComposeFrontDoor) -> None:
    """Browsers send their join token as ``access_token`` in the signalling URL; whoever read
    the access log could take the call over while the token lives."""
    token = requests.post(f"{compose_door.url}/api/token", json={}, verify=str(compose_door.ca_file),
                          timeout=10).json()["participant_token"]
    validate = requests.get(f"{compose_door.url}/rtc/validate", params={"access_token": token, "auto_subscribe": "1"},
                            verify=str(compose_door.ca_file), timeout=10)
    assert validate.status_code == 200, validate.text
    deadline = time.monotonic() + 10
    while "/rtc/validate" not in compose_door.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    entries = [json.loads(line) for line in compose_door.log.read_text().splitlines()
               if line.startswith("{") and "/rtc/validate" in line]
    assert entries, "the access log has no entry for the request"
    assert token not in compose_door.log.read_text()
    assert token.split(".")[1] not in compose_door.log.read_text()
    uri = entries[-1]["request"]["uri"]
    assert "access_token=REDACTED" in uri and "auto_subscribe=1" in uri, uri
