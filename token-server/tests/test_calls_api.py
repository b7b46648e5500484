"""`GET /api/calls`: the agent's call records, for holders of a records key only."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests import openapi_check
from token_server import create_app
from voice_calls.records import CALLS, OPEN_CALLS, TURN, WATCHDOG_WRITER, Sequence, call_key, event_fields, events_key
from tokenserver_testing import API_SECRET, make_settings

RECORDS_KEY = "records-key-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def calls_client(redis_server: str) -> FlaskClient:
    app = create_app(make_settings(records_api_keys=RECORDS_KEY, redis_url=redis_server))
    return app.test_client()


def conforms(response: TestResponse, path: str) -> TestResponse:
    """Assert the response matches openapi.yaml for GET `path` (a template); return it."""
    openapi_check.problems(path, "get", response.status_code, response.headers, response.mimetype, response.data)
    return response


def record_call(store: redis.Redis, room: str, started_at: float) -> None:
    """Write a call the way the agent does (the format: `voice_calls.records`)."""
    store.hset(call_key(room), mapping={
        "room": room, "participant_identity": "user-a", "participant_name": "Ada",
        "started_at": str(started_at), "jobs": "1",
    })
    store.zadd(CALLS, {room: started_at})
    store.sadd(OPEN_CALLS, room)
    seq = Sequence()
    for n, (role, text) in enumerate([("assistant", "Hello!"), ("user", "What time is it?")]):
        data = {"role": role, "text": text, "interrupted": False}
        store.xadd(events_key(room), event_fields(TURN, data, job="j1", seq=seq, at=started_at + n))


def auth(key: str = RECORDS_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_recorded_call_is_listed_and_read_back(calls_client: FlaskClient, store: redis.Redis) -> None:
    now = time.time()
    record_call(store, "room-older", now - 60)
    record_call(store, "room-newer", now)

    listing = conforms(calls_client.get("/api/calls", headers=auth()), "/api/calls")
    assert listing.status_code == 200
    assert [c["room"] for c in listing.get_json()["calls"]] == ["room-newer", "room-older"]

    one = conforms(calls_client.get("/api/calls/room-newer", headers=auth()), "/api/calls/{room}")
    assert one.status_code == 200
    body = one.get_json()
    assert body["participant_name"] == "Ada" and body["open"] is True
    assert [(t["role"], t["text"]) for t in body["turns"]] == [("assistant", "Hello!"), ("user", "What time is it?")]

    paged = calls_client.get(f"/api/calls?limit=1&before={now - 1}", headers=auth())
    assert [c["room"] for c in paged.get_json()["calls"]] == ["room-older"]


@pytest.mark.parametrize("headers", [{}, auth("wrong-key-0123456789abcdefghijklmnopqrstuvw"), {"Authorization": "Basic x"}])
def test_records_need_a_records_key(calls_client: FlaskClient, headers: dict[str, str]) -> None:
    response = conforms(calls_client.get("/api/calls", headers=headers), "/api/calls")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_retried_write_is_read_once(calls_client: FlaskClient, store: redis.Redis) -> None:
    """A write retried after a lost reply lands twice with the same (job, seq): read once. The
    watchdogs of two workers write as the same writer, yet none of their events is lost."""
    record_call(store, "room-r", time.time())
    entry = store.xrange(events_key("room-r"))[-1][1]
    store.xadd(events_key("room-r"), entry)  # the user's turn again
    for dog in (Sequence.from_clock(), Sequence.from_clock()):
        store.xadd(events_key("room-r"), event_fields("lifecycle", {"event": "redispatched"}, job=WATCHDOG_WRITER, seq=dog))
    store.xadd(events_key("room-r"), {**entry, "seq": "99", "data": "not json"})
    body = calls_client.get("/api/calls/room-r", headers=auth()).get_json()
    assert [t["text"] for t in body["turns"]] == ["Hello!", "What time is it?"]
    assert [e["event"] for e in body["events"]] == ["redispatched", "redispatched"]


def test_unknown_room_and_bad_query_are_clear_errors(calls_client: FlaskClient, store: redis.Redis) -> None:
    missing = conforms(calls_client.get("/api/calls/room-nope", headers=auth()), "/api/calls/{room}")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    for query in ("limit=0", "limit=500", "limit=abc", "before=-1"):
        bad = conforms(calls_client.get(f"/api/calls?{query}", headers=auth()), "/api/calls")
        assert bad.status_code == 422, query
        assert bad.get_json()["error"]["message"].split(":")[0] in query


@pytest.mark.parametrize("room", ["room-a:events", "room-a%3Aevents", "x" * 300, "room a", "room-%00"])
def test_a_name_no_call_can_have_is_404(calls_client: FlaskClient, store: redis.Redis, room: str) -> None:
    record_call(store, "room-a", time.time())  # its events stream is voice:call:room-a:events
    response = conforms(calls_client.get(f"/api/calls/{room}", headers=auth()), "/api/calls/{room}")
    assert response.status_code == 404, response.get_json()
    assert response.get_json()["error"]["code"] == "not_found"


def test_phone_call_rooms_are_read_back(calls_client: FlaskClient, store: redis.Redis) -> None:
    for room in ("call-_+15551234567_AbC9xYz", "call-out-Ab_c-9"):
        record_call(store, room, time.time())
        assert calls_client.get(f"/api/calls/{room}", headers=auth()).status_code == 200, room


def test_the_api_is_off_without_keys(client: FlaskClient) -> None:
    response = conforms(client.get("/api/calls", headers=auth()), "/api/calls")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "records_api_disabled"


@pytest.mark.parametrize("keys", ["short", API_SECRET])
def test_weak_records_keys_are_refused(keys: str) -> None:
    with pytest.raises(ValueError, match="RECORDS_API_KEYS"):
        make_settings(records_api_keys=keys)
