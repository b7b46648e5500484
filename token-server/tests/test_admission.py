"""Admission control against a real Redis: capacity as the agent workers publish it (in the
shared format, `voice_calls.admission`), calls pending and served, and the 503 refusal."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient
from voice_calls.admission import PENDING, PUBLISH, WITHDRAW, WORKERS, WorkerCapacity, worker_key

from token_server import create_app
from tokenserver_testing import make_settings


def publish(url: str, worker_id: str, capacity: WorkerCapacity, ttl_ms: int = 10_000) -> None:
    """What an agent worker does every second (voice_agent.capacity), with the same script."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.eval(PUBLISH, 2, WORKERS, worker_key(worker_id), worker_id, capacity.to_json(), ttl_ms)


def withdraw(url: str, worker_id: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    client.eval(WITHDRAW, 2, WORKERS, worker_key(worker_id), worker_id)


@pytest.fixture
def client(redis_url: str) -> FlaskClient:
    settings = make_settings(
        redis_url=redis_url, token_admission_control=True, token_busy_retry_after_seconds=7,
        token_max_sessions_per_identity=100, token_rate_limit_per_address="1000/minute",
    )
    return create_app(settings).test_client()


def ask(client: FlaskClient) -> tuple[int, dict, dict]:
    response = client.post("/api/token", json={})
    return response.status_code, response.get_json(), dict(response.headers)


def test_no_worker_means_no_room(client: FlaskClient, redis_url: str) -> None:
    status, body, headers = ask(client)
    assert status == 503
    assert body["error"]["code"] == "at_capacity"
    assert "no agent is available" in body["error"]["message"]
    assert headers["Retry-After"] == "7"
    assert redis.Redis.from_url(redis_url).zcard(PENDING) == 0  # nothing was promised


def test_calls_are_admitted_up_to_the_workers_capacity(client: FlaskClient, redis_url: str) -> None:
    publish(redis_url, "w1", WorkerCapacity(max_calls=2, draining=False, rooms=[]))
    publish(redis_url, "w2", WorkerCapacity(max_calls=1, draining=False, rooms=[]))
    rooms = []
    for _ in range(3):
        status, body, _ = ask(client)
        assert status == 201, body
        rooms.append(body["room_name"])
    status, body, headers = ask(client)
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "at_capacity", "7")
    assert "all 3 lines are busy" in body["error"]["message"]

    # The calls start: workers list their rooms, the pending entries go, the count stays.
    publish(redis_url, "w1", WorkerCapacity(max_calls=2, draining=False, rooms=rooms[:2]))
    publish(redis_url, "w2", WorkerCapacity(max_calls=1, draining=False, rooms=rooms[2:]))
    assert ask(client)[0] == 503
    assert redis.Redis.from_url(redis_url).zcard(PENDING) == 0

    # One ends: one line frees.
    publish(redis_url, "w2", WorkerCapacity(max_calls=1, draining=False, rooms=[]))
    assert ask(client)[0] == 201
    assert ask(client)[0] == 503


def test_a_draining_or_vanished_worker_gives_no_capacity(client: FlaskClient, redis_url: str) -> None:
    publish(redis_url, "w1", WorkerCapacity(max_calls=4, draining=True, rooms=["room-a"]))
    publish(redis_url, "w2", WorkerCapacity(max_calls=1, draining=False, rooms=[]))
    assert ask(client)[0] == 201  # w2's one line; w1's call does not use it
    assert ask(client)[0] == 503
    withdraw(redis_url, "w2")
    publish(redis_url, "w3", WorkerCapacity(max_calls=1, draining=False, rooms=[]), ttl_ms=200)
    time.sleep(0.4)  # w3 died without a word: its key expired
    status, body, _ = ask(client)
    assert status == 503 and "no agent is available" in body["error"]["message"]
    assert redis.Redis.from_url(redis_url, decode_responses=True).smembers(WORKERS) == {"w1"}


def test_an_unused_token_stops_holding_a_line_after_the_join_window(redis_url: str) -> None:
    settings = make_settings(redis_url=redis_url, token_admission_control=True, token_join_window_seconds=5)
    client = create_app(settings).test_client()
    publish(redis_url, "w1", WorkerCapacity(max_calls=1, draining=False, rooms=[]))
    assert ask(client)[0] == 201
    assert ask(client)[0] == 503
    store = redis.Redis.from_url(redis_url)
    ((room, _expiry),) = store.zrange(PENDING, 0, -1, withscores=True)
    store.zadd(PENDING, {room: time.time() - 1})  # the join window is over
    assert ask(client)[0] == 201


def test_a_refused_call_does_not_count_against_the_identity(redis_url: str) -> None:
    settings = make_settings(redis_url=redis_url, token_admission_control=True, token_max_sessions_per_identity=1)
    client = create_app(settings).test_client()
    for _ in range(3):
        assert client.post("/api/token", json={"participant_identity": "ann"}).status_code == 503
    publish(redis_url, "w1", WorkerCapacity(max_calls=5, draining=False, rooms=[]))
    assert client.post("/api/token", json={"participant_identity": "ann"}).status_code == 201


def test_admission_is_off_without_redis() -> None:
    client = create_app(make_settings(token_admission_control=True, redis_url="")).test_client()
    assert ask(client)[0] == 201
