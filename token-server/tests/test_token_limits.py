"""Rate limits (per address, per identity), the concurrent-session cap, and the client
address behind the front door; in memory and in a real Redis."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from token_server import create_app
from token_server import sessions
from token_server.sessions import MemorySessionStore, RedisSessionStore, SessionStore

from tokenserver_testing import SHARED_KEY, make_settings

STORES = ["memory", "redis"]


def make_client(store: str, redis_url: str | None, **overrides: object) -> FlaskClient:
    values: dict[str, object] = {"redis_url": redis_url if store == "redis" else ""}
    values.update(overrides)
    return create_app(make_settings(**values)).test_client()


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url_for_store(store_kind: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if store_kind == "redis" else None


def assert_429(response: TestResponse, code: str) -> int:
    assert response.status_code == 429, response.get_json()
    assert response.get_json()["error"]["code"] == code
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def as_user(identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SHARED_KEY}", "X-Participant-Identity": identity}


def test_burst_from_one_identity_is_limited_while_another_is_served(store_kind: str, url_for_store: str | None) -> None:
    client = make_client(
        store_kind, url_for_store, token_auth_mode="shared-key", token_shared_keys=SHARED_KEY,
        token_rate_limit_per_identity="5/minute", token_max_sessions_per_identity=100,
    )
    statuses = [client.post("/api/token", json={}, headers=as_user("burster")).status_code for _ in range(12)]
    assert statuses == [201] * 5 + [429] * 7
    retry_after = assert_429(client.post("/api/token", json={}, headers=as_user("burster")), "rate_limited")
    assert retry_after <= 60
    assert client.post("/api/token", json={}, headers=as_user("patient")).status_code == 201


def test_per_address_limit_counts_failed_authentication(store_kind: str, url_for_store: str | None) -> None:
    client = make_client(
        store_kind, url_for_store, token_auth_mode="shared-key", token_shared_keys=SHARED_KEY,
        token_rate_limit_per_address="3/minute",
    )
    wrong = {"Authorization": "Bearer guess-0123456789abcdefghijklmnopqrstuvwxyz", "X-Participant-Identity": "x"}
    assert [client.post("/api/token", json={}, headers=wrong).status_code for _ in range(3)] == [401] * 3
    # The right key is too late: this address used its budget guessing.
    assert_429(client.post("/api/token", json={}, headers=as_user("x")), "rate_limited")


def test_addresses_behind_the_front_door_are_told_apart() -> None:
    client = create_app(make_settings(token_rate_limit_per_address="2/minute", token_trusted_proxy_hops=1,
                                      token_allow_open_public=True)).test_client()
    first = {"X-Forwarded-For": "203.0.113.7"}
    assert [client.post("/api/token", json={}, headers=first).status_code for _ in range(3)] == [201, 201, 429]
    assert client.post("/api/token", json={}, headers={"X-Forwarded-For": "198.51.100.9"}).status_code == 201
    # Only the hop the front door added counts: a client cannot prepend its own.
    spoofed = {"X-Forwarded-For": "1.2.3.4, 203.0.113.7"}
    assert client.post("/api/token", json={}, headers=spoofed).status_code == 429


def test_without_a_proxy_forwarded_for_is_ignored() -> None:
    # shared-key mode: open mode refuses any forwarded address that is not loopback.
    client = create_app(make_settings(token_rate_limit_per_address="2/minute", token_trusted_proxy_hops=0,
                                      token_auth_mode="shared-key", token_shared_keys=SHARED_KEY)).test_client()
    statuses = [client.post("/api/token", json={}, headers={"X-Forwarded-For": f"10.0.0.{n}", "Authorization":
                                                            f"Bearer {SHARED_KEY}", "X-Participant-Identity": f"u{n}"}
                            ).status_code for n in range(3)]
    assert statuses == [201, 201, 429]


def test_open_mode_limits_a_body_identity(store_kind: str, url_for_store: str | None) -> None:
    client = make_client(store_kind, url_for_store, token_rate_limit_per_identity="2/minute",
                         token_max_sessions_per_identity=100)
    statuses = [client.post("/api/token", json={"participant_identity": "same"}).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    # Anonymous callers get fresh random identities: only the address limit applies.
    assert all(client.post("/api/token", json={}).status_code == 201 for _ in range(3))


def test_concurrent_session_cap(store_kind: str, url_for_store: str | None) -> None:
    client = make_client(store_kind, url_for_store, token_max_sessions_per_identity=2, token_ttl_seconds=120,
                         token_join_window_seconds=30)
    for _ in range(2):
        assert client.post("/api/token", json={"participant_identity": "caller"}).status_code == 201
    retry_after = assert_429(client.post("/api/token", json={"participant_identity": "caller"}), "too_many_sessions")
    assert 25 <= retry_after <= 30  # until the first unused token's join window ends, not its TTL
    assert client.post("/api/token", json={"participant_identity": "other"}).status_code == 201


class Clock:
    """Stands in for the `time` module inside `token_server.sessions` (Unix seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_an_unused_token_stops_counting_after_the_join_window(
    store_kind: str, url_for_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiveKit's starter apps fetch a token when the page loads and may fetch another on start:
    the one never used holds the identity's slot for the join window only."""
    clock = Clock()
    monkeypatch.setattr(sessions, "time", clock)
    client = make_client(store_kind, url_for_store, token_max_sessions_per_identity=1, token_ttl_seconds=600,
                         token_join_window_seconds=30)
    assert client.post("/api/token", json={"participant_identity": "caller"}).status_code == 201
    assert_429(client.post("/api/token", json={"participant_identity": "caller"}), "too_many_sessions")
    clock.now += 31
    assert client.post("/api/token", json={"participant_identity": "caller"}).status_code == 201


def test_a_token_used_after_its_join_window_counts_again(
    store_kind: str, url_for_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(sessions, "time", clock)
    store = make_store(store_kind, url_for_store)
    assert store.reserve("dee", "room-late", pending_s=30, cap=1).granted
    clock.now += 300  # the token is still valid; the join window is long over
    assert store.active("dee") == 0
    assert store.joined("dee", "room-late", live_s=3600, cap=1)  # LiveKit's participant_joined
    assert store.active("dee") == 1
    assert not store.reserve("dee", "room-next", pending_s=30, cap=1).granted
    store.left("dee", "room-late")
    assert store.reserve("dee", "room-next", pending_s=30, cap=1).granted


# --- the stores themselves ---------------------------------------------------------------


def make_store(kind: str, url: str | None) -> SessionStore:
    if kind == "redis":
        assert url
        return RedisSessionStore(redis.Redis.from_url(url, decode_responses=True))
    return MemorySessionStore()


def test_store_lifecycle(store_kind: str, url_for_store: str | None) -> None:
    store = make_store(store_kind, url_for_store)
    assert store.reserve("ann", "room-a", pending_s=60, cap=2).granted
    assert store.reserve("ann", "room-b", pending_s=60, cap=2).granted
    refused = store.reserve("ann", "room-c", pending_s=60, cap=2)
    assert not refused.granted and 55 <= refused.retry_after_s <= 60
    assert store.active("ann") == 2

    # Joined: counts for the live span instead of the token TTL.
    assert store.joined("ann", "room-a", live_s=3600, cap=2)
    # Another identity in ann's room counts for itself and leaves ann's count alone.
    assert store.joined("bea", "room-a", live_s=3600, cap=2)
    assert store.active("bea") == 1 and store.active("ann") == 2

    store.left("ann", "room-a")
    assert store.active("ann") == 1
    store.room_finished("room-b")
    assert store.active("ann") == 0
    store.room_finished("room-a")
    assert store.active("bea") == 0
    assert store.reserve("ann", "room-d", pending_s=60, cap=2).granted


def test_a_join_past_the_cap_is_refused_even_after_its_room_finished(
    store_kind: str, url_for_store: str | None
) -> None:
    store = make_store(store_kind, url_for_store)
    assert store.reserve("dee", "room-1", pending_s=600, cap=1).granted
    assert store.joined("dee", "room-1", live_s=3600, cap=1)
    store.left("dee", "room-1")
    store.room_finished("room-1")
    assert store.reserve("dee", "room-2", pending_s=600, cap=1).granted
    # The first token is still valid: joining room-1 again would be a second call.
    assert not store.joined("dee", "room-1", live_s=3600, cap=1)
    assert store.active("dee") == 1
    assert store.joined("dee", "room-2", live_s=3600, cap=1)  # the counted room, again: fine
    assert store.joined("dee", "room-2", live_s=3600, cap=1)  # reconnected


def test_a_new_reservation_never_shortens_a_long_calls_count(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisSessionStore(client)
    assert store.joined("eve", "room-long", live_s=3600, cap=3)
    assert store.reserve("eve", "room-short", pending_s=60, cap=3).granted
    assert client.ttl("token-server:sessions:eve") >= 3600  # the long call's session outlives the token's
    assert client.ttl("token-server:room-members:room-long") >= 3600


def test_pending_sessions_expire(store_kind: str, url_for_store: str | None) -> None:
    store = make_store(store_kind, url_for_store)
    assert store.reserve("bo", "room-x", pending_s=1, cap=1).granted
    assert not store.reserve("bo", "room-y", pending_s=1, cap=1).granted
    time.sleep(1.2)
    assert store.active("bo") == 0
    assert store.reserve("bo", "room-y", pending_s=1, cap=1).granted


def test_rejoin_after_leaving_counts_again(store_kind: str, url_for_store: str | None) -> None:
    store = make_store(store_kind, url_for_store)
    store.reserve("cy", "room-r", pending_s=60, cap=3)
    assert store.joined("cy", "room-r", live_s=600, cap=3)
    store.left("cy", "room-r")
    assert store.active("cy") == 0
    assert store.joined("cy", "room-r", live_s=600, cap=3)  # reconnected
    assert store.active("cy") == 1


def test_events_are_kept_in_order(store_kind: str, url_for_store: str | None) -> None:
    store = make_store(store_kind, url_for_store)
    for n in range(3):
        store.record_event({"event": "participant_joined", "id": f"EV_{n}", "room": "r", "participant": "p"})
    assert [e["id"] for e in store.events()] == ["EV_0", "EV_1", "EV_2"]
    assert [e["id"] for e in store.events(2)] == ["EV_1", "EV_2"]


def test_redis_down_is_503(tmp_path: object) -> None:
    client = create_app(make_settings(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = client.post("/api/token", json={})
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "storage_unavailable"
    assert "127.0.0.1:1" not in response.get_data(as_text=True)
