"""Slow clients cannot take the token endpoint away from everyone else.

Real slow clients ("slowloris"): sockets that send a request's headers and then its body
one byte at a time, or the headers themselves one byte at a time. They go to every path
the front door (Caddy) proxies and straight to the token server's gunicorn (where
livekit-server posts its webhooks). While they trickle, a normal token request through
the front door and a health check of the token server must still answer within 1 s;
the front door must cut the slow clients off by itself; and the webhook endpoint must
refuse an unsigned delivery before it reads the body.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.e2e.harness import ProcessStack

pytestmark = pytest.mark.e2e

#: Slow connections per path and kind: more than gunicorn's 8 threads had.
CONNECTIONS = 12
#: Seconds between two bytes of a slow client.
TRICKLE_S = 0.5
#: What a normal request must answer within while the slow clients trickle (s).
ANSWER_WITHIN_S = 1.0
#: Bodies the slow clients announce (bytes): under the webhook's 64 KiB limit.
ANNOUNCED_BYTES = 60_000
#: The longest the front door may keep a slow client (s): its read_header (10 s) and
#: read_body (10 s) timeouts, plus slack for a busy machine.
FRONT_DOOR_CUTS_OFF_WITHIN_S = 25.0

FRONT_DOOR_PATHS = [
    ("POST", "/api/livekit/webhook"),
    ("POST", "/api/token"),
    ("GET", "/api/calls"),
    ("GET", "/api/openapi.yaml"),
    ("POST", "/api/nothing"),
    ("GET", "/rtc"),
]
TOKEN_SERVER_PATHS = [("POST", "/api/livekit/webhook"), ("POST", "/api/token"), ("GET", "/healthz")]


@dataclass
class SlowClient:
    """One socket: `head` went out at once, `trickle` goes one byte per tick."""

    target: str
    sock: socket.socket
    trickle: bytes
    sent: int = 0
    closed_at: float | None = None
    answer: bytes = b""


@dataclass
class Slowloris:
    """Many slow clients, driven by one thread that sends each a byte every `TRICKLE_S`."""

    clients: list[SlowClient] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self, port: int, method: str, path: str, slow_body: bool) -> None:
        """`CONNECTIONS` clients to 127.0.0.1:`port`: a slow body (headers complete, body
        announced, then a byte at a time) or slow headers (a header's bytes one at a time)."""
        headers = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Authorization: Bearer not-a-livekit-signature\r\nContent-Type: application/json\r\n"
        )
        if slow_body:
            head = (headers + f"Content-Length: {ANNOUNCED_BYTES}\r\n\r\n").encode()
            trickle = b"{" + b" " * (ANNOUNCED_BYTES - 2) + b"}"
        else:
            head, trickle = headers.encode(), b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n"
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head)
            sock.setblocking(False)
            self.clients.append(SlowClient(f"{port} {method} {path}", sock, trickle))

    def _tick(self) -> None:
        now = time.monotonic()
        for client in self.clients:
            if client.closed_at is not None:
                continue
            try:
                chunk = client.sock.recv(4096)
                if chunk == b"":
                    client.closed_at = now
                    continue
                client.answer += chunk
            except BlockingIOError:
                pass
            except OSError:
                client.closed_at = now
                continue
            if client.sent < len(client.trickle):
                try:
                    client.sock.send(client.trickle[client.sent:client.sent + 1])
                    client.sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    client.closed_at = now

    def run(self) -> None:
        while not self.stop.wait(TRICKLE_S):
            self._tick()

    def connected(self, target: str) -> int:
        """How many of `target`'s ("<port> <method> <path>") clients are still connected."""
        return sum(1 for c in self.clients if c.closed_at is None and c.target == target)

    def close(self) -> None:
        self.stop.set()
        for client in self.clients:
            with contextlib.suppress(OSError):
                client.sock.close()


@contextlib.contextmanager
def slowloris(targets: list[tuple[int, str, str]]) -> Iterator[Slowloris]:
    """Slow clients of both kinds on every (port, method, path), trickling until exit."""
    attack = Slowloris()
    thread = threading.Thread(target=attack.run, name="slowloris", daemon=True)
    try:
        for port, method, path in targets:
            attack.open(port, method, path, slow_body=True)
            attack.open(port, method, path, slow_body=False)
        thread.start()
        yield attack
    finally:
        attack.close()
        thread.join(5)


def timed(method: str, url: str, **kwargs: object) -> tuple[float, int]:
    """Seconds a request took to answer, and its status (599: no answer within 5 s)."""
    started = time.monotonic()
    try:
        status = requests.request(method, url, timeout=5, **kwargs).status_code  # type: ignore[arg-type]
    except requests.RequestException:
        status = 599
    return time.monotonic() - started, status


def test_slow_clients_on_every_path_leave_the_token_endpoint_answering(native_stack: ProcessStack) -> None:
    web, token = int(native_stack.env["WEB_PORT"]), int(native_stack.env["TOKEN_SERVER_PORT"])
    direct = f"http://127.0.0.1:{token}"
    targets = [(web, m, p) for m, p in FRONT_DOOR_PATHS] + [(token, m, p) for m, p in TOKEN_SERVER_PATHS]
    with slowloris(targets) as attack:
        started = time.monotonic()
        time.sleep(2 * TRICKLE_S)  # every slow client has sent something more
        answers = []
        for _ in range(4):
            answers.append(("front door /api/token", *timed("POST", native_stack.token_url, json={})))
            answers.append(("token server /healthz", *timed("GET", f"{direct}/healthz")))
            time.sleep(0.5)
        still = {target: attack.connected(target) for target in {c.target for c in attack.clients}}
        slow = [a for a in answers if a[1] > ANSWER_WITHIN_S or a[2] not in (200, 201)]
        assert not slow, f"answers (what, s, status) while slow clients trickled: {answers}; connected: {still}"
        # The attack was real: gunicorn still had every slow token request while we measured...
        assert still[f"{token} POST /api/token"] == 2 * CONNECTIONS, still
        # ... and the front door cuts its own off, whatever the path.
        front = [c for c in attack.clients if c.target.startswith(f"{web} ")]
        while time.monotonic() - started < FRONT_DOOR_CUTS_OFF_WITHIN_S and any(c.closed_at is None for c in front):
            time.sleep(0.5)
        lingering = sorted({c.target for c in front if c.closed_at is None})
        assert not lingering, f"the front door still holds slow clients on {lingering}"


def test_an_unsigned_webhook_is_refused_before_its_body_is_read(native_stack: ProcessStack) -> None:
    port = int(native_stack.env["TOKEN_SERVER_PORT"])
    for authorization in ("", "Authorization: Bearer not-a-livekit-signature\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                (f"POST /api/livekit/webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}"
                 f"Content-Type: application/webhook+json\r\nContent-Length: {ANNOUNCED_BYTES}\r\n\r\n{{").encode()
            )
            answer, deadline = b"", time.monotonic() + ANSWER_WITHIN_S * 3
            while b"}}" not in answer and time.monotonic() < deadline:  # the JSON error's end
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    break
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), f"no refusal before the body was sent: {answer[:80]!r}"
        assert b'"invalid_signature"' in answer


def test_the_front_door_does_not_serve_livekit_webhooks(native_stack: ProcessStack) -> None:
    response = requests.post(f"{native_stack.web_url}/api/livekit/webhook", data=b"{}", timeout=10,
                             headers={"Content-Type": "application/webhook+json"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
