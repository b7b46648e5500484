"""Fixtures: a test `Settings`, the app built from it, its test client, and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.redis_server import running_redis
from token_server import Settings, create_app
from tokenserver_testing import make_settings


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its ``redis://`` URL."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


@pytest.fixture
def store(redis_url: str) -> redis.Redis:
    """A client (decoded replies) of the session's Redis, emptied for this test."""
    return redis.Redis.from_url(redis_url, decode_responses=True)
