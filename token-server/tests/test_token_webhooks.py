"""``POST /api/livekit/webhook``: signed LiveKit events are recorded and feed the session
cap; unsigned, forged or mismatched deliveries are refused."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from livekit import api

from token_server import create_app
from token_server.sessions import SessionStore

from tokenserver_testing import API_KEY, API_SECRET, make_settings

URL = "/api/livekit/webhook"


def event_body(event: str, room: str = "room-abc", identity: str | None = None, event_id: str = "EV_1",
               kind: str = "STANDARD") -> bytes:
    payload: dict[str, object] = {"event": event, "id": event_id, "createdAt": "1700000000",
                                  "room": {"name": room, "sid": "RM_1"}}
    if identity is not None:
        payload["participant"] = {"identity": identity, "sid": "PA_1", "kind": kind}
    return json.dumps(payload).encode()


def signature(body: bytes, key: str = API_KEY, secret: str = API_SECRET, ttl_s: int = 300) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(key, secret).with_sha256(digest).with_ttl(timedelta(seconds=ttl_s)).to_jwt()


def deliver(client: FlaskClient, body: bytes, auth: str | None) -> int:
    headers = {} if auth is None else {"Authorization": auth}
    return client.post(URL, data=body, headers=headers, content_type="application/webhook+json").status_code


def store_of(app: Flask) -> SessionStore:
    store: SessionStore = app.extensions["token_server.sessions"]
    return store


@pytest.mark.parametrize("event", ["room_started", "room_finished", "participant_joined", "participant_left"])
def test_signed_events_are_recorded(app: Flask, client: FlaskClient, event: str) -> None:
    body = event_body(event, identity=None if event.startswith("room") else "alice")
    assert deliver(client, body, signature(body)) == 204
    [recorded] = store_of(app).events()
    assert recorded["event"] == event and recorded["room"] == "room-abc" and recorded["id"] == "EV_1"
    assert recorded["participant"] == ("" if event.startswith("room") else "alice")


def test_bearer_prefix_is_accepted(app: Flask, client: FlaskClient) -> None:
    body = event_body("room_started")
    assert deliver(client, body, "Bearer " + signature(body)) == 204


def test_other_events_are_acknowledged_not_recorded(app: Flask, client: FlaskClient) -> None:
    body = event_body("track_published", identity="alice")
    assert deliver(client, body, signature(body)) == 204
    assert store_of(app).events() == []


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "wrong_secret", "wrong_key", "other_body", "expired", "garbage", "no_sha256"],
)
def test_unverified_deliveries_are_401(app: Flask, client: FlaskClient, case: str) -> None:
    body = event_body("participant_joined", identity="alice")
    auth = {
        "missing": None,
        "empty": "",
        "wrong_secret": signature(body, secret="another-secret-0123456789abcdefghijklmnop"),
        "wrong_key": signature(body, key="APIother"),
        "other_body": signature(event_body("participant_left", identity="alice")),
        "expired": signature(body, ttl_s=-600),
        "garbage": "not-a-jwt",
        "no_sha256": api.AccessToken(API_KEY, API_SECRET).to_jwt(),
    }[case]
    response = client.post(URL, data=body, headers={} if auth is None else {"Authorization": auth})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert store_of(app).events() == []


def test_signed_non_event_is_400(client: FlaskClient) -> None:
    body = b'{"event": 42, "room": "not an object"}'
    response = client.post(URL, data=body, headers={"Authorization": signature(body)})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_body"


def test_large_body_is_413(client: FlaskClient) -> None:
    body = b"{" + b" " * 70_000 + b"}"
    assert deliver(client, body, signature(body)) == 413


def test_events_drive_the_session_cap() -> None:
    app = create_app(make_settings(token_max_sessions_per_identity=1))
    client = app.test_client()
    first = client.post("/api/token", json={"participant_identity": "dana"}).get_json()
    assert client.post("/api/token", json={"participant_identity": "dana"}).status_code == 429

    joined = event_body("participant_joined", room=first["room_name"], identity="dana", event_id="EV_j")
    assert deliver(client, joined, signature(joined)) == 204
    assert client.post("/api/token", json={"participant_identity": "dana"}).status_code == 429

    left = event_body("participant_left", room=first["room_name"], identity="dana", event_id="EV_l")
    assert deliver(client, left, signature(left)) == 204
    assert client.post("/api/token", json={"participant_identity": "dana"}).status_code == 201


def test_room_finished_ends_the_owners_session() -> None:
    app = create_app(make_settings(token_max_sessions_per_identity=1))
    client = app.test_client()
    first = client.post("/api/token", json={"participant_identity": "eli"}).get_json()
    finished = event_body("room_finished", room=first["room_name"], event_id="EV_f")
    assert deliver(client, finished, signature(finished)) == 204
    assert client.post("/api/token", json={"participant_identity": "eli"}).status_code == 201


def test_webhooks_are_not_rate_limited_like_tokens() -> None:
    client = create_app(make_settings(token_rate_limit_per_address="1/minute")).test_client()
    for n in range(5):
        body = event_body("room_started", event_id=f"EV_{n}")
        assert deliver(client, body, signature(body)) == 204


def test_a_token_reused_after_its_room_finished_is_over_the_cap_and_its_room_deleted() -> None:
    app = create_app(make_settings(token_max_sessions_per_identity=1))
    deleted: list[str] = []
    app.extensions["token_server.webhooks"].end_call = deleted.append
    client = app.test_client()

    def event(name: str, room: str, n: int, identity: str | None = "fay", kind: str = "STANDARD") -> None:
        body = event_body(name, room=room, identity=identity, event_id=f"EV_{n}", kind=kind)
        assert deliver(client, body, signature(body)) == 204

    first = client.post("/api/token", json={"participant_identity": "fay"}).get_json()["room_name"]
    event("participant_joined", first, 1)
    event("participant_joined", first, 2, identity="agent-AJ_1", kind="AGENT")  # the agent: not counted
    event("participant_left", first, 3)
    event("room_finished", first, 4, identity=None)
    second = client.post("/api/token", json={"participant_identity": "fay"})
    assert second.status_code == 201
    event("participant_joined", second.get_json()["room_name"], 5)
    assert deleted == []
    event("participant_joined", first, 6)  # the first token, still valid, re-creates its room
    assert deleted == [first]
    assert client.post("/api/token", json={"participant_identity": "fay"}).status_code == 429


def test_callers_joining_and_agents_leaving_are_watched_for_a_missing_agent(redis_url: str) -> None:
    """The dispatch guard's watch lists follow the webhooks (the guard itself runs in e2e tests)."""
    from token_server.dispatch_guard import AGENT_LEFT, WAITING
    from voice_calls.admission import PENDING

    # LiveKit is not running here: the guard's rounds fail fast and change nothing.
    client = create_app(make_settings(redis_url=redis_url, livekit_url="ws://127.0.0.1:9")).test_client()
    store = redis.Redis.from_url(redis_url, decode_responses=True)

    def send(event: str, identity: str, kind: str, n: int) -> None:
        body = event_body(event, room="room-w", identity=identity, event_id=f"EV_{n}", kind=kind)
        assert deliver(client, body, signature(body)) == 204

    send("participant_joined", "caller", "STANDARD", 1)
    assert store.zscore(WAITING, "room-w") is not None, "a caller with no agent yet"
    send("participant_joined", "agent-AJ_1", "AGENT", 2)
    assert store.zscore(WAITING, "room-w") is None, "the agent came"
    send("participant_left", "agent-AJ_1", "AGENT", 3)
    assert store.zscore(AGENT_LEFT, "room-w") is not None, "the agent left the caller"
    send("participant_joined", "agent-AJ_2", "AGENT", 4)
    assert store.zscore(AGENT_LEFT, "room-w") is None, "another agent took over"
    send("participant_joined", "phone", "SIP", 5)
    store.zadd(PENDING, {"room-w": 9e9})  # admitted, its agent not started yet
    body = event_body("room_finished", room="room-w", event_id="EV_6")
    assert deliver(client, body, signature(body)) == 204
    assert store.zscore(WAITING, "room-w") is None and store.zscore(AGENT_LEFT, "room-w") is None
    assert store.zscore(PENDING, "room-w") is None, "a finished room holds no admission line"
