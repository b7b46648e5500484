"""Security headers, CORS, open mode's local-only guard, and every response of every
mode checked against the OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from livekit import api
from werkzeug.test import TestResponse

from tests import openapi_check
from tests.standins.oidc_provider import OidcProvider, new_rsa_key
from token_server import create_app
from token_server.security import SECURITY_HEADERS

from tokenserver_testing import API_KEY, API_SECRET, SHARED_KEY, make_settings


def test_security_headers_on_every_response(client: FlaskClient) -> None:
    responses = [
        client.post("/api/token", json={}),
        client.post("/api/token", json={"room_name": "x"}),
        client.get("/api/token"),
        client.get("/nowhere"),
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/api/openapi.yaml"),
        client.post("/api/livekit/webhook", data=b"{}"),
    ]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.path, name)
        assert "Strict-Transport-Security" not in response.headers
        assert "Access-Control-Allow-Origin" not in response.headers


def test_hsts_when_served_over_https(client: FlaskClient) -> None:
    response = client.post("/api/token", json={}, headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_cors_allow_list() -> None:
    client = create_app(make_settings(token_cors_origins="https://app.example.org, http://localhost:5173")).test_client()
    allowed = client.post("/api/token", json={}, headers={"Origin": "https://app.example.org"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert "Origin" in allowed.headers["Vary"]
    preflight = client.options("/api/token", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    for origin in ("https://evil.example", "https://app.example.org.evil.example", "null"):
        refused = client.post("/api/token", json={}, headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in refused.headers


def test_no_cors_by_default(client: FlaskClient) -> None:
    response = client.options("/api/token", headers={"Origin": "https://app.example.org",
                                                     "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers


class FakeSocket:
    def __init__(self, address: tuple[str, int] | str) -> None:
        self.address = address

    def getsockname(self) -> tuple[str, int] | str:
        return self.address


@pytest.mark.parametrize(
    ("local", "status"),
    [(("127.0.0.1", 8090), 201), (("::1", 8090, 0, 0), 201), ("/run/token.sock", 201),
     (("192.168.1.20", 8090), 403), (("0.0.0.0", 8090), 403), (("2001:db8::1", 8090, 0, 0), 403)],
)
def test_open_mode_only_serves_loopback_connections(client: FlaskClient, local: object, status: int) -> None:
    """Even if gunicorn was bound wider than TOKEN_SERVER_HOST says."""
    response = client.post("/api/token", json={}, environ_base={"gunicorn.socket": FakeSocket(local)})  # type: ignore[arg-type]
    assert response.status_code == status
    if status == 403:
        assert response.get_json()["error"]["code"] == "open_mode_local_only"


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [("127.0.0.1", 201), ("::1", 201), ("::1, 127.0.0.1", 201), ("192.168.1.30", 403), ("203.0.113.5", 403),
     ("203.0.113.5, 127.0.0.1", 403), ("127.0.0.1, 203.0.113.5, 127.0.0.1", 403), ("unknown", 403)],
)
def test_open_mode_only_serves_clients_on_this_machine(client: FlaskClient, forwarded: str, status: int) -> None:
    """Through the front door (Caddy listens on every interface) the client is the forwarded hop."""
    response = client.post("/api/token", json={}, headers={"X-Forwarded-For": forwarded})
    assert response.status_code == status
    if status == 403:
        assert "TOKEN_AUTH_MODE=open" in response.get_json()["error"]["message"]


def test_open_mode_allowed_public_serves_everyone() -> None:
    client = create_app(make_settings(token_server_host="0.0.0.0", token_allow_open_public=True)).test_client()
    response = client.post("/api/token", json={}, headers={"X-Forwarded-For": "203.0.113.5"},
                           environ_base={"gunicorn.socket": FakeSocket(("192.168.1.20", 8090))})  # type: ignore[arg-type]
    assert response.status_code == 201


def test_authenticated_modes_serve_other_machines() -> None:
    client = create_app(make_settings(token_auth_mode="shared-key", token_shared_keys=SHARED_KEY,
                                      token_server_host="0.0.0.0")).test_client()
    response = client.post("/api/token", json={}, headers={"Authorization": f"Bearer {SHARED_KEY}",
                                                           "X-Participant-Identity": "u1"},
                           environ_base={"gunicorn.socket": FakeSocket(("192.168.1.20", 8090))})  # type: ignore[arg-type]
    assert response.status_code == 201


# --- every response against the spec -----------------------------------------------------


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider(audience="spec-test") as provider:
        yield provider


def check(response: TestResponse, path: str, method: str = "POST") -> TestResponse:
    openapi_check.problems(path, method, response.status_code, response.headers, response.mimetype,
                           response.get_data())
    assert API_SECRET not in response.get_data(as_text=True)
    return response


def webhook_auth(body: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(API_KEY, API_SECRET).with_sha256(digest).with_ttl(timedelta(minutes=5)).to_jwt()


def test_every_response_matches_the_spec(idp: OidcProvider) -> None:
    seen: set[int] = set()

    def token(client: FlaskClient, **kwargs: object) -> None:
        seen.add(check(client.post("/api/token", **kwargs), "/api/token").status_code)  # type: ignore[arg-type]

    open_client = create_app(make_settings(token_rate_limit_per_identity="3/minute",
                                           token_max_sessions_per_identity=100)).test_client()
    for body in ({}, {"participant_name": "Ann", "participant_attributes": {"a": "b"}}, {"room_name": "r"},
                 {"participant_identity": "a b"}, {"x": 1}, {"participant_metadata": "m" * 600}):
        token(open_client, json=body)
    token(open_client, data=b"{", content_type="application/json")
    token(open_client, data=b"[]", content_type="application/json")
    token(open_client, data=b"{}", content_type="text/plain")
    token(open_client, data=b"{" + b" " * 9000 + b"}", content_type="application/json")
    token(open_client, json={}, headers={"Host": "bad host/"})
    token(open_client, json={}, environ_base={"gunicorn.socket": FakeSocket(("10.1.2.3", 1))})
    for _ in range(4):
        token(open_client, json={"participant_identity": "busy"})

    capped = create_app(make_settings(token_max_sessions_per_identity=1)).test_client()
    for _ in range(2):
        token(capped, json={"participant_identity": "solo"})

    keyed = create_app(make_settings(token_auth_mode="shared-key", token_shared_keys=SHARED_KEY)).test_client()
    token(keyed, json={})
    token(keyed, json={}, headers={"Authorization": "Bearer nope"})
    token(keyed, json={}, headers={"Authorization": f"Bearer {SHARED_KEY}"})
    token(keyed, json={}, headers={"Authorization": f"Bearer {SHARED_KEY}", "X-Participant-Identity": "u-1"})
    token(keyed, json={"participant_identity": "u"},
          headers={"Authorization": f"Bearer {SHARED_KEY}", "X-Participant-Identity": "u-1"})

    oidc = create_app(make_settings(token_auth_mode="oidc", oidc_issuer=idp.issuer, oidc_audience="spec-test",
                                    oidc_jwks_url=idp.jwks_url)).test_client()
    token(oidc, json={}, headers={"Authorization": f"Bearer {idp.id_token('s-1', kid='ec-1')}"})
    token(oidc, json={}, headers={"Authorization": f"Bearer {idp.id_token('s-1', kid='x', key=new_rsa_key())}"})
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = create_app(make_settings(token_auth_mode="oidc", oidc_issuer=dead, oidc_audience="spec-test")).test_client()
    token(down, json={}, headers={"Authorization": f"Bearer {idp.id_token('s-1')}"})
    redis_down = create_app(make_settings(redis_url="redis://127.0.0.1:1/0")).test_client()
    token(redis_down, json={})

    assert {201, 400, 401, 403, 413, 415, 422, 429, 503} <= seen

    hooks: set[int] = set()
    for body, auth in [
        (b'{"event": "room_started", "room": {"name": "r"}}', "sign"),
        (b'{"event": "room_started"}', "forged"),
        (b'{"event": 5}', "sign"),
        (b"{}", None),
        (b"{" + b" " * 70_000 + b"}", "sign"),
    ]:
        headers = {}
        if auth == "sign":
            headers["Authorization"] = webhook_auth(body)
        elif auth == "forged":
            headers["Authorization"] = "Bearer forged"
        response = open_client.post("/api/livekit/webhook", data=body, headers=headers,
                                    content_type="application/webhook+json")
        hooks.add(check(response, "/api/livekit/webhook").status_code)
    assert hooks == {204, 400, 401, 413}

    check(open_client.get("/healthz"), "/healthz", "GET")
    check(open_client.get("/metrics"), "/metrics", "GET")
    check(open_client.get("/api/openapi.yaml"), "/api/openapi.yaml", "GET")
    served = json.dumps(openapi_check.spec())
    assert "/api/livekit/webhook" in served
