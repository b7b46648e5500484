"""The real process: refusal at start-up (plain Python and gunicorn) and serving under
gunicorn."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tokenserver_testing import API_SECRET, SHARED_KEY, subprocess_env

RECORDS_KEY = "records-key-9876543210zyxwvutsrqponmlkjihgfedcba"

GOOD_ENV = {"LIVEKIT_API_KEY": "APIkey", "LIVEKIT_API_SECRET": API_SECRET, "AGENT_NAME": "agent-x"}

BAD_ENVS = [
    pytest.param({"LIVEKIT_API_KEY": "APIkey", "AGENT_NAME": "a"}, "LIVEKIT_API_SECRET is not set", id="missing"),
    pytest.param({**GOOD_ENV, "LIVEKIT_API_SECRET": "secret"}, "LIVEKIT_API_SECRET is LiveKit's dev default", id="dev"),
    pytest.param({**GOOD_ENV, "LIVEKIT_API_SECRET": "short-secret-xyz"}, "at least 32 characters", id="short"),
    pytest.param({"LIVEKIT_API_KEY": "APIkey", "LIVEKIT_API_SECRET": API_SECRET}, "AGENT_NAME is not set", id="no-agent"),
    pytest.param({**GOOD_ENV, "TOKEN_SERVER_HOST": "0.0.0.0:8090"}, "TOKEN_AUTH_MODE=open refuses", id="open-exposed"),
    pytest.param({**GOOD_ENV, "TOKEN_AUTH_MODE": "shared-key", "TOKEN_SHARED_KEYS": "short-secret-xyz"},
                 "at least 32 characters", id="short-shared-key"),
    pytest.param({**GOOD_ENV, "TOKEN_AUTH_MODE": "oidc"}, "needs OIDC_ISSUER and OIDC_AUDIENCE", id="oidc-incomplete"),
    pytest.param({**GOOD_ENV, "TOKEN_AUTH_MODE": "shared-key", "TOKEN_SHARED_KEYS": "a" * 40},
                 "TOKEN_SHARED_KEYS: every key must be random", id="one-letter-shared-key"),
    pytest.param({**GOOD_ENV, "RECORDS_API_KEYS": "ab" * 20}, "RECORDS_API_KEYS: every key must be random",
                 id="two-letter-records-key"),
    pytest.param({**GOOD_ENV, "LIVEKIT_API_SECRET": "x" * 48}, "LIVEKIT_API_SECRET must be random", id="one-letter-secret"),
    pytest.param({**GOOD_ENV, "TOKEN_AUTH_MODE": "shared-key", "TOKEN_SHARED_KEYS": SHARED_KEY,
                  "RECORDS_API_KEYS": f"{RECORDS_KEY},{SHARED_KEY}"},
                 "a key in both TOKEN_SHARED_KEYS and RECORDS_API_KEYS", id="shared-key-reads-records"),
]


@pytest.mark.parametrize(("env", "words"), BAD_ENVS)
def test_create_app_refuses_bad_environment(tmp_path: Path, env: dict[str, str], words: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from token_server import create_app; create_app()"],
        env=subprocess_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("token-server: configuration refused: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr
    for value in ("short-secret-xyz", SHARED_KEY, "a" * 40, "ab" * 20, "x" * 48):
        assert value not in result.stderr


def gunicorn(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
         "--graceful-timeout", "2", "--no-control-socket", "token_server:create_app()"],
        env=subprocess_env(**env), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.parametrize(("env", "words"), BAD_ENVS[1:3])
def test_gunicorn_exits_with_one_clear_line(tmp_path: Path, env: dict[str, str], words: str) -> None:
    process = gunicorn(tmp_path, env)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, output
    assert "Traceback" not in output
    ours = [line for line in output.splitlines() if line.startswith("token-server: configuration refused: ")]
    assert len(ours) == 1, output
    assert words in ours[0]
    assert "App failed to load" in output


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serving(process: subprocess.Popen[str]) -> tuple[str, queue.Queue[str]]:
    """Wait until gunicorn listens and answers `/healthz`: its base URL and its output lines."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "gunicorn exited"
            continue
        found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else None
    assert port, "gunicorn did not report its port"
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                assert json.load(response) == {"status": "ok"}
            return base, lines
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_gunicorn_serves_the_app(tmp_path: Path) -> None:
    process = gunicorn(tmp_path, GOOD_ENV)
    try:
        base, _lines = serving(process)
        port = int(base.rsplit(":", 1)[1])
        request = urllib.request.Request(
            f"{base}/api/token", data=b"{}", method="POST",
            headers={"Content-Type": "application/json", "X-Forwarded-Proto": "https"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            body = json.load(response)
        assert body["server_url"] == f"wss://127.0.0.1:{port}"
        assert body["room_name"].startswith("room-")
    finally:
        stop(process)


def test_metrics_add_up_every_gunicorn_worker(tmp_path: Path) -> None:
    """WEB_CONCURRENCY=2 with the shipped gunicorn.conf.py: whichever worker answers
    ``/metrics``, it counts the refusals and request times of both."""
    conf = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", "127.0.0.1:0", "--graceful-timeout", "2",
         "--access-logformat", "served-by %(p)s %(U)s %(s)s", "token_server:create_app()"],
        env={k: v for k, v in subprocess_env(**GOOD_ENV, WEB_CONCURRENCY="2").items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base, lines = serving(process)
        served: set[str] = set()
        sent = 0
        while len(served) < 2 and sent < 400:  # until both workers have refused some
            for _ in range(20):
                request = urllib.request.Request(f"{base}/api/token", data=b"not json", method="POST",
                                                 headers={"Content-Type": "application/json"})
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=5)
                assert refused.value.code == 400
                sent += 1
            time.sleep(0.5)  # the access log lines
            while not lines.empty():
                found = re.search(r"served-by <(\d+)> /api/token 400", lines.get())
                if found:
                    served.add(found.group(1))
        assert len(served) == 2, f"one worker took all {sent} requests"
        for _ in range(6):  # several scrapes: each may be answered by either worker
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                text = response.read().decode()
            refused_total = sum(float(v) for v in re.findall(
                r'^token_server_requests_rejected_total\{code="malformed_json"\} (\S+)$', text, re.M))
            timed = sum(float(v) for v in re.findall(
                r'^token_server_request_seconds_count\{endpoint="api.issue_token",status="400"\} (\S+)$', text, re.M))
            assert (refused_total, timed) == (sent, sent), text[-2000:]
    finally:
        stop(process)
