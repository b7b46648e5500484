"""LiveKit's own front ends against the token endpoint: the exact requests livekit-client's
``TokenSource.endpoint`` and LiveKit's agent-starter-react send, and the browser's CORS
preflight before them when the page is on another origin.

The bodies are what livekit-client 2.23's ``TokenSource.endpoint('/api/token').fetch(options)``
writes (captured from the library: protobuf JSON with proto field names, defaults left out);
agent-starter-react's own token source (``NEXT_PUBLIC_CONN_DETAILS_ENDPOINT`` set) sends the
same ``room_config`` with ``JSON.stringify`` and an ``X-Sandbox-Id`` header, empty off
LiveKit Cloud. tests/e2e/test_web.py runs the real library in Chromium on another origin.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from livekit import api

from tests import openapi_check
from token_server import create_app

from tokenserver_testing import AGENT_NAME, API_KEY, API_SECRET, SHARED_KEY, make_settings

ORIGIN = "http://localhost:3000"
#: ``TokenSource.endpoint(url).fetch(options)`` bodies, byte for byte, by `options`.
ENDPOINT_BODIES = {
    "{}": b"{}",
    "{agentName}": b'{"room_config":{"agents":[{"agent_name":"' + AGENT_NAME.encode() + b'"}]}}',
    "{agentName, participantName}": (
        b'{"participant_name":"Ann","room_config":{"agents":[{"agent_name":"' + AGENT_NAME.encode() + b'"}]}}'
    ),
}
#: agent-starter-react's sandbox token source: ``JSON.stringify({room_config})``.
STARTER_BODIES = {
    "without AGENT_NAME": b"{}",
    "with AGENT_NAME": b'{"room_config":{"agents":[{"agent_name":"' + AGENT_NAME.encode() + b'"}]}}',
}


def cross_origin_client(**overrides: object) -> FlaskClient:
    return create_app(make_settings(token_cors_origins=f"https://app.example.org, {ORIGIN}", **overrides)).test_client()


def checked(response: Any) -> Any:
    openapi_check.problems("/api/token", "post", response.status_code, response.headers, response.mimetype,
                           response.get_data())
    return response


def dispatched_agents(token: str) -> list[api.RoomAgentDispatch]:
    config = api.TokenVerifier(API_KEY, API_SECRET).verify(token).room_config
    assert config is not None
    return list(config.agents)


@pytest.mark.parametrize("body", ENDPOINT_BODIES.values(), ids=list(ENDPOINT_BODIES))
def test_token_source_endpoint_requests_get_a_token_for_our_agent(body: bytes) -> None:
    client = cross_origin_client()
    response = checked(client.post("/api/token", data=body, headers={"Content-Type": "application/json",
                                                                      "Origin": ORIGIN}))
    assert response.status_code == 201, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    issued = response.get_json()
    # The server still chooses the room and the dispatch: a fresh room, our agent, our metadata.
    [dispatch] = dispatched_agents(issued["participant_token"])
    assert dispatch.agent_name == AGENT_NAME
    assert issued["participant_identity"] in dispatch.metadata
    if b"participant_name" in body:
        assert issued["participant_name"] == "Ann"


@pytest.mark.parametrize("body", STARTER_BODIES.values(), ids=list(STARTER_BODIES))
def test_agent_starter_react_requests_with_a_sandbox_id_get_a_token(body: bytes) -> None:
    client = cross_origin_client()
    headers = {"Content-Type": "application/json", "X-Sandbox-Id": "", "Origin": ORIGIN}
    response = checked(client.post("/api/token", data=body, headers=headers))
    assert response.status_code == 201, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_the_starters_request_in_shared_key_mode() -> None:
    """Behind a backend that adds the key and the user (the starter's own /api/token route
    rewritten to call ours), the same body is accepted."""
    client = cross_origin_client(token_auth_mode="shared-key", token_shared_keys=SHARED_KEY)
    response = checked(client.post("/api/token", data=STARTER_BODIES["with AGENT_NAME"], headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {SHARED_KEY}",
        "X-Participant-Identity": "ann"}))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["participant_identity"] == "ann"


@pytest.mark.parametrize(
    "request_headers",
    ["content-type", "content-type,x-sandbox-id", "authorization,content-type", "authorization,content-type,x-sandbox-id"],
)
def test_the_browsers_preflight_is_answered_with_the_headers_it_asks_for(request_headers: str) -> None:
    """What Chromium sends before the POST above from another origin (header names lower
    case, sorted, comma-separated) and the answer it needs to go on."""
    client = cross_origin_client()
    preflight = client.options("/api/token", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": request_headers,
    })
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"].split(", ")
    allowed = {name.strip().lower() for name in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert set(request_headers.split(",")) <= allowed
    assert "Origin" in preflight.headers["Vary"]
    # Nothing was issued, counted or rate limited by the preflight itself.
    assert "participant_token" not in preflight.get_data(as_text=True)


def test_an_origin_not_listed_gets_no_preflight_answer() -> None:
    client = cross_origin_client()
    preflight = client.options("/api/token", headers={
        "Origin": "http://localhost:3001", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-sandbox-id",
    })
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Headers" not in preflight.headers


@pytest.mark.parametrize(
    "room_config",
    [
        {"agents": [{"agent_name": "another-agent"}]},
        {"agents": [{"agent_name": AGENT_NAME, "metadata": "{\"role\": \"admin\"}"}]},
        {"agents": [{"agent_name": AGENT_NAME, "deployment": "staging"}]},
        {"agents": [{"agent_name": AGENT_NAME}, {"agent_name": AGENT_NAME}]},
        {"agents": [{"agent_name": AGENT_NAME}], "max_participants": 50},
        {"agents": [{"agent_name": AGENT_NAME}], "name": "my-room"},
        {"agents": [{}]},
        {"agents": []},
        {"agents": {"agent_name": AGENT_NAME}},
        {"agents": [AGENT_NAME]},
        {},
        "test-agent",
    ],
)
def test_any_other_room_config_is_refused_saying_what_is_allowed(client: FlaskClient, room_config: Any) -> None:
    response = checked(client.post("/api/token", json={"room_config": room_config}))
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "field_not_allowed"
    assert "room_config" in error["message"]
    assert f'{{"agents": [{{"agent_name": "{AGENT_NAME}"}}]}}' in error["message"]


@pytest.mark.parametrize(
    "room_config",
    [
        {"agents": [{"agent_name": AGENT_NAME}]},
        # Defaults some SDKs' encoders write out: null and the protobuf default "".
        {"agents": [{"agent_name": AGENT_NAME, "metadata": "", "deployment": None}], "name": None},
    ],
)
def test_a_room_config_naming_only_our_agent_is_ignored(client: FlaskClient, room_config: Any) -> None:
    response = checked(client.post("/api/token", json={"room_config": room_config}))
    assert response.status_code == 201, response.get_json()
    [dispatch] = dispatched_agents(response.get_json()["participant_token"])
    assert dispatch.agent_name == AGENT_NAME


def test_room_name_is_still_refused_next_to_our_agent(client: FlaskClient) -> None:
    body = {"room_name": "mine", "room_config": {"agents": [{"agent_name": AGENT_NAME}]}}
    response = checked(client.post("/api/token", json=body))
    assert response.status_code == 403
    message = response.get_json()["error"]["message"]
    assert message.startswith("room_name:") and "room_config" not in message
