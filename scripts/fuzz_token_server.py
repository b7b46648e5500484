"""Fuzz the token server from its own OpenAPI document (schemathesis), against the real
process: gunicorn serving ``token_server:create_app()`` with Redis storage.

A benchmark-style job, outside the default test run (``./scripts/fuzz-token-server``).
It starts its own redis-server and gunicorn on free loopback ports, and runs, per auth
mode, schemathesis-generated requests for every operation, in both generation modes:
*positive* (requests the spec allows) and *negative* (requests it does not). Each
response goes through schemathesis' checks: no server error, a documented status code,
content type and headers, and a body matching the response schema.

Rate limits are set high here so the generated requests reach validation instead of
stopping at 429 (the limits themselves are tested in token-server/tests and
tests/e2e/test_security.py); in ``shared-key`` mode the per-identity limit and the session
cap keep their defaults, so their 429s are part of the run.

Prints the request count per mode, operation and generation mode, the status codes seen,
and every check failure; exits 1 when any response was a server error (5xx) or broke
the spec.

    ./scripts/fuzz-token-server [--requests 13000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "token-server")]

import requests  # noqa: E402
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings, seed  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.ports import free_port  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402
from tests.standins.oidc_provider import OidcProvider  # noqa: E402

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Share of the request budget per (mode, operation): the token endpoint gets most.
WEIGHTS = {"POST /api/token": 0.8, "POST /api/livekit/webhook": 0.17, "GET": 0.01}
MODES = {"open": 0.45, "shared-key": 0.35, "oidc": 0.20}
SHARED_KEY = "fuzz-" + secrets.token_urlsafe(32)
HIGH = "1000000/minute"


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def token_server(env_overrides: dict[str, str], log_path: Path) -> Iterator[str]:
    """gunicorn as in the Procfile, on a free port; yields its base URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TOKEN_", "OIDC_", "LIVEKIT_", "REDIS_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT / "token-server"), str(ROOT / "calls")]),
        "LIVEKIT_API_KEY": "APIfuzz" + secrets.token_hex(4),
        "LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "AGENT_NAME": "fuzz-agent",
        "TOKEN_SERVER_HOST": "127.0.0.1",
        "TOKEN_SERVER_PORT": str(port),
        "TOKEN_TRUSTED_PROXY_HOPS": "0",
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    })
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "token-server/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "token_server:create_app()"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Tally:
    """What one run saw."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


def fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    examples: int,
    base_url: str,
    headers: dict[str, str],
    label: str,
    tally: Tally,
    run_seed: int,
) -> None:
    http = requests.Session()
    strategy = operation.as_strategy(generation_mode=mode, headers=headers or None)

    @seed(run_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        try:
            response = case.call(base_url=base_url, session=http, timeout=30)
        except requests.RequestException as error:
            tally.failures[f"{label}: transport error {type(error).__name__}"] += 1
            return
        tally.requests[label] += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as error:  # schemathesis' failures are AssertionErrors
            title = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            key = f"{label} -> {response.status_code}: {title}"
            tally.failures[key] += 1
            tally.examples.setdefault(key, case.as_curl_command())

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters or body)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=13_000, help="approximate total requests (default 13000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            print(f"fuzz: {tool} is not on PATH (run through ./scripts/fuzz-token-server)", file=sys.stderr)
            return 2

    tally = Tally()
    started = time.monotonic()
    log_dir = ROOT / "artifacts" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir, running_redis(Path(workdir)) as redis, \
            OidcProvider(audience="fuzz-app") as idp:
        mode_env = {
            "open": {"TOKEN_AUTH_MODE": "open", "TOKEN_RATE_LIMIT_PER_IDENTITY": HIGH,
                     "TOKEN_MAX_SESSIONS_PER_IDENTITY": "1000"},
            "shared-key": {"TOKEN_AUTH_MODE": "shared-key", "TOKEN_SHARED_KEYS": SHARED_KEY},
            "oidc": {"TOKEN_AUTH_MODE": "oidc", "OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": "fuzz-app",
                     "TOKEN_RATE_LIMIT_PER_IDENTITY": HIGH, "TOKEN_MAX_SESSIONS_PER_IDENTITY": "1000"},
        }
        for auth_mode, share in MODES.items():
            env = {"REDIS_URL": redis.url, "TOKEN_RATE_LIMIT_PER_ADDRESS": HIGH, **mode_env[auth_mode]}
            with token_server(env, log_dir / "token-server-fuzz.log") as base:
                schema = schemathesis.openapi.from_url(f"{base}/api/openapi.yaml")
                auth_headers = {
                    "open": {},
                    "shared-key": {"Authorization": f"Bearer {SHARED_KEY}"},
                    "oidc": {"Authorization": f"Bearer {idp.id_token('fuzz-user', kid='ec-1', expires_in=3600)}"},
                }[auth_mode]
                for result in schema.get_all_operations():
                    operation = result.ok()
                    name = f"{operation.method.upper()} {operation.path}"
                    weight = WEIGHTS.get(name, WEIGHTS["GET"])
                    for generation in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                        examples = max(5, int(args.requests * share * weight / 2))
                        headers = auth_headers if name == "POST /api/token" else {}
                        label = f"{auth_mode:10} {name:28} {generation.value}"
                        fuzz_operation(operation, generation, examples, base, headers, label, tally, args.seed)
                        print(f"  {label}: {tally.requests[label]} requests", flush=True)

    elapsed = time.monotonic() - started
    print(f"\nrequests: {tally.total} in {elapsed:.0f} s")
    print("status codes: " + ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items())))
    print(f"server errors (5xx): {tally.server_errors}")
    print(f"check failures: {sum(tally.failures.values())}")
    for key, count in tally.failures.most_common():
        print(f"  {count:6} x {key}\n           e.g. {tally.examples.get(key, '')[:400]}")
    return 1 if tally.server_errors or tally.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
