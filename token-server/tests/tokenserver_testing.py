"""Shared test helpers for the token server (uniquely named so it never clashes with
other test folders on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

from token_server import Settings

#: The folder holding the `token_server` package (for subprocess PYTHONPATH).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

API_KEY = "APItestkey"
API_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
AGENT_NAME = "test-agent"

#: Environment variables the server reads; cleared for subprocesses.
SERVER_ENV = (
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LIVEKIT_PUBLIC_URL",
    "AGENT_NAME",
    "LIVEKIT_URL",
    "TOKEN_NO_AGENT_NOTICE_SECONDS",
    "TOKEN_AGENT_JOIN_TIMEOUT_SECONDS",
    "TOKEN_TTL_SECONDS",
    "ROOM_EMPTY_TIMEOUT_SECONDS",
    "ROOM_DEPARTURE_TIMEOUT_SECONDS",
    "ROOM_MAX_PARTICIPANTS",
    "PARTICIPANT_IDENTITY_MAX_LENGTH",
    "PARTICIPANT_NAME_MAX_LENGTH",
    "PARTICIPANT_METADATA_MAX_BYTES",
    "PARTICIPANT_ATTRIBUTES_MAX_ITEMS",
    "TOKEN_MAX_REQUEST_BYTES",
    "LOG_LEVEL",
    "TOKEN_AUTH_MODE",
    "TOKEN_SERVER_HOST",
    "TOKEN_ALLOW_OPEN_PUBLIC",
    "TOKEN_SHARED_KEYS",
    "RECORDS_API_KEYS",
    "OIDC_ISSUER",
    "OIDC_AUDIENCE",
    "OIDC_JWKS_URL",
    "OIDC_ALGORITHMS",
    "OIDC_LEEWAY_SECONDS",
    "OIDC_JWKS_CACHE_SECONDS",
    "REDIS_URL",
    "TOKEN_RATE_LIMIT_PER_ADDRESS",
    "TOKEN_RATE_LIMIT_PER_IDENTITY",
    "TOKEN_MAX_SESSIONS_PER_IDENTITY",
    "TOKEN_SESSION_MAX_SECONDS",
    "TOKEN_TRUSTED_PROXY_HOPS",
    "TOKEN_CORS_ORIGINS",
    "TOKEN_ADMISSION_CONTROL",
    "TOKEN_JOIN_WINDOW_SECONDS",
    "TOKEN_BUSY_RETRY_AFTER_SECONDS",
    "VIDEO_INPUT",
)

#: A shared API key for `shared-key` mode tests (32+ characters).
SHARED_KEY = "backend-key-0123456789abcdefghijklmnopqrstuv"


def make_settings(**overrides: object) -> Settings:
    """A `Settings` with test credentials and every tunable given explicitly."""
    values: dict[str, object] = {
        "livekit_api_key": API_KEY,
        "livekit_api_secret": API_SECRET,
        "livekit_public_url": "",
        "agent_name": AGENT_NAME,
        "livekit_url": "ws://127.0.0.1:7880",
        "token_no_agent_notice_seconds": 3.0,
        "token_agent_join_timeout_seconds": 60.0,
        "token_ttl_seconds": 600,
        "room_empty_timeout_seconds": 60,
        "room_departure_timeout_seconds": 20,
        "room_max_participants": 3,
        "participant_identity_max_length": 64,
        "participant_name_max_length": 64,
        "participant_metadata_max_bytes": 512,
        "participant_attributes_max_items": 8,
        "token_max_request_bytes": 8192,
        "log_level": "INFO",
        "token_auth_mode": "open",
        "token_server_host": "127.0.0.1",
        "token_allow_open_public": False,
        "redis_url": "",
        "token_rate_limit_per_address": "60/minute;600/hour",
        "token_rate_limit_per_identity": "10/minute;100/hour",
        "token_max_sessions_per_identity": 3,
        "token_session_max_seconds": 3600,
        "token_trusted_proxy_hops": 1,
        "token_cors_origins": "",
        # No agent workers publish capacity in these tests (test_admission turns it on).
        "token_admission_control": False,
        "token_join_window_seconds": 30,
        "token_busy_retry_after_seconds": 5,
        "video_input": "off",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def subprocess_env(**values: str) -> dict[str, str]:
    """The current environment without the server's variables, plus `values` and a
    PYTHONPATH that finds the package."""
    env = {key: value for key, value in os.environ.items() if key not in SERVER_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PACKAGE_ROOT), str(PACKAGE_ROOT.parent / "calls"), env.get("PYTHONPATH")])
    )
    env.update(values)
    return env
