"""Authentication modes: open and shared-key requests, and the settings each mode refuses."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from livekit import api
from pydantic import ValidationError
from structlog.testing import capture_logs

from token_server import create_app
from token_server.settings import describe_settings_error

from tokenserver_testing import API_KEY, API_SECRET, SHARED_KEY, make_settings

OTHER_KEY = "rotated-key-zyxwvutsrqponmlkjihgfedcba9876543210"


def identity_of(response_body: dict[str, str]) -> str:
    return api.TokenVerifier(API_KEY, API_SECRET).verify(response_body["participant_token"]).identity


@pytest.fixture
def keyed() -> FlaskClient:
    return create_app(make_settings(token_auth_mode="shared-key", token_shared_keys=f"{SHARED_KEY},{OTHER_KEY}")).test_client()


def bearer(key: str, identity: str | None = "alice") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if identity is not None:
        headers["X-Participant-Identity"] = identity
    return headers


# --- open --------------------------------------------------------------------------------


def test_open_mode_takes_identity_from_body_and_ignores_credentials(client: FlaskClient) -> None:
    response = client.post("/api/token", json={"participant_identity": "bob"},
                           headers={"Authorization": "Bearer whatever", "X-Participant-Identity": "mallory"})
    assert response.status_code == 201
    assert identity_of(response.get_json()) == "bob"


# --- shared-key --------------------------------------------------------------------------


def test_shared_key_identity_comes_from_the_header(keyed: FlaskClient) -> None:
    response = keyed.post("/api/token", json={"participant_name": "Alice"}, headers=bearer(SHARED_KEY))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["participant_identity"] == "alice"
    assert identity_of(body) == "alice"
    assert body["participant_name"] == "Alice"


def test_every_configured_key_works(keyed: FlaskClient) -> None:
    assert keyed.post("/api/token", json={}, headers=bearer(OTHER_KEY)).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": SHARED_KEY},  # no scheme
        {"Authorization": f"Basic {SHARED_KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong-key-0123456789abcdefghijklmnopqrstuvwxyz"},
        {"Authorization": f"Bearer {SHARED_KEY[:-1]}"},
        {"Authorization": f"Bearer {SHARED_KEY}x"},
        {"Authorization": f"Bearer {API_SECRET}"},
    ],
)
def test_missing_or_wrong_key_is_401(keyed: FlaskClient, headers: dict[str, str]) -> None:
    response = keyed.post("/api/token", json={}, headers={**headers, "X-Participant-Identity": "alice"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "participant_token" not in response.get_data(as_text=True)


def test_key_never_logged(keyed: FlaskClient) -> None:
    with capture_logs() as logs:
        keyed.post("/api/token", json={}, headers=bearer(SHARED_KEY))
        keyed.post("/api/token", json={}, headers=bearer("wrong-" + SHARED_KEY))
    text = json.dumps(logs)
    assert SHARED_KEY not in text
    assert any(entry["event"] == "auth_failed" for entry in logs)


def test_body_identity_refused_outside_open_mode(keyed: FlaskClient) -> None:
    response = keyed.post("/api/token", json={"participant_identity": "mallory"}, headers=bearer(SHARED_KEY))
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "field_not_allowed"
    assert "participant_identity" in error["message"]


@pytest.mark.parametrize(
    ("identity", "words"),
    [(None, "required"), ("", "1-64 characters"), ("a b", "only letters"), ("agent-x", "reserved")],
)
def test_identity_header_is_validated(keyed: FlaskClient, identity: str | None, words: str) -> None:
    response = keyed.post("/api/token", json={}, headers=bearer(SHARED_KEY, identity))
    assert response.status_code == 422
    message = response.get_json()["error"]["message"]
    assert message.startswith("X-Participant-Identity:") and words in message


def test_authentication_comes_before_the_body(keyed: FlaskClient) -> None:
    """An unauthenticated caller learns nothing about validation."""
    response = keyed.post("/api/token", data=b"{not json", content_type="application/json")
    assert response.status_code == 401


# --- settings ----------------------------------------------------------------------------


def refusal(**overrides: object) -> str:
    with pytest.raises(ValidationError) as caught:
        make_settings(**overrides)
    return describe_settings_error(caught.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "[::]", "192.168.1.5", "voice.example"])
def test_open_mode_refuses_an_exposed_host(host: str) -> None:
    message = refusal(token_server_host=host)
    assert "TOKEN_AUTH_MODE=open refuses" in message and "TOKEN_ALLOW_OPEN_PUBLIC" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_open_mode_accepts_loopback(host: str) -> None:
    assert not make_settings(token_server_host=host).exposed


def test_open_mode_exposed_when_explicitly_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(token_server_host="0.0.0.0", token_allow_open_public=True)
    create_app(settings)  # configures logging itself: read what it printed
    assert '"event": "open_mode_exposed"' in capsys.readouterr().out


def test_authenticated_modes_may_be_exposed() -> None:
    make_settings(token_server_host="0.0.0.0", token_auth_mode="shared-key", token_shared_keys=SHARED_KEY)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"token_auth_mode": "shared-key"}, "needs TOKEN_SHARED_KEYS"),
        ({"token_auth_mode": "shared-key", "token_shared_keys": "short"}, "at least 32 characters"),
        ({"token_auth_mode": "shared-key", "token_shared_keys": f"{SHARED_KEY},short"}, "at least 32"),
        ({"token_auth_mode": "shared-key", "token_shared_keys": API_SECRET}, "must not contain LIVEKIT_API_SECRET"),
        ({"token_auth_mode": "oidc"}, "needs OIDC_ISSUER and OIDC_AUDIENCE"),
        ({"token_auth_mode": "oidc", "oidc_issuer": "https://idp.example"}, "OIDC_AUDIENCE"),
        ({"token_auth_mode": "oidc", "oidc_issuer": "http://idp.example", "oidc_audience": "a"}, "OIDC_ISSUER must be an https://"),
        ({"token_auth_mode": "oidc", "oidc_issuer": "https://idp.example", "oidc_audience": "a",
          "oidc_jwks_url": "http://idp.example/jwks"}, "OIDC_JWKS_URL must be an https://"),
        ({"oidc_algorithms": "HS256"}, "OIDC_ALGORITHMS must list asymmetric"),
        ({"oidc_algorithms": "RS256,none"}, "OIDC_ALGORITHMS"),
        ({"oidc_algorithms": ""}, "OIDC_ALGORITHMS"),
        ({"token_auth_mode": "basic"}, "TOKEN_AUTH_MODE"),
        ({"token_rate_limit_per_address": "lots"}, "TOKEN_RATE_LIMIT_PER_ADDRESS must be rate limits"),
        ({"token_rate_limit_per_identity": ""}, "TOKEN_RATE_LIMIT_PER_IDENTITY"),
        ({"redis_url": "http://127.0.0.1:6379"}, "REDIS_URL must be a redis://"),
        ({"token_cors_origins": "*"}, "TOKEN_CORS_ORIGINS"),
        ({"token_cors_origins": "https://app.example/path"}, "TOKEN_CORS_ORIGINS"),
        ({"token_trusted_proxy_hops": 9}, "TOKEN_TRUSTED_PROXY_HOPS"),
    ],
)
def test_incomplete_modes_and_bad_values_refused(overrides: dict[str, object], words: str) -> None:
    message = refusal(**overrides)
    assert words in message
    assert API_SECRET not in message and SHARED_KEY not in message


def test_oidc_accepts_loopback_http_and_https() -> None:
    make_settings(token_auth_mode="oidc", oidc_issuer="https://idp.example/realms/x", oidc_audience="app")
    make_settings(token_auth_mode="oidc", oidc_issuer="http://127.0.0.1:9999", oidc_audience="app")
    # Google spells its issuer two ways; keys come from the explicit JWKS URL.
    make_settings(token_auth_mode="oidc", oidc_issuer="https://accounts.google.com,accounts.google.com",
                  oidc_audience="client-id", oidc_jwks_url="https://idp.example/certs")


def test_secrets_hidden_in_settings_repr() -> None:
    settings = make_settings(token_auth_mode="shared-key", token_shared_keys=SHARED_KEY,
                             redis_url="redis://:hunter2-password@127.0.0.1:6379/0")
    assert SHARED_KEY not in repr(settings)
    assert "hunter2" not in repr(settings)
