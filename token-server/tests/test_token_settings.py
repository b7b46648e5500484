"""Settings: refused secrets and values, one-line messages that never show the secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from token_server.settings import Settings, describe_settings_error
from tokenserver_testing import API_SECRET, make_settings


def refusal(**overrides: object) -> str:
    with pytest.raises(ValidationError) as caught:
        make_settings(**overrides)
    return describe_settings_error(caught.value)


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN_TTL_SECONDS", "ROOM_EMPTY_TIMEOUT_SECONDS", "ROOM_DEPARTURE_TIMEOUT_SECONDS",
                 "ROOM_MAX_PARTICIPANTS", "LIVEKIT_PUBLIC_URL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    monkeypatch.setenv("AGENT_NAME", "some-agent")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.agent_name == "some-agent"
    assert settings.token_ttl_seconds == 600
    assert settings.room_max_participants == 3
    assert settings.room_empty_timeout_seconds == 60
    assert settings.room_departure_timeout_seconds == 20
    assert settings.livekit_public_url == ""
    assert API_SECRET not in repr(settings) and API_SECRET not in str(settings)


def test_empty_env_value_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    monkeypatch.setenv("AGENT_NAME", "some-agent")
    monkeypatch.setenv("TOKEN_TTL_SECONDS", "")
    monkeypatch.setenv("LIVEKIT_PUBLIC_URL", "")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.token_ttl_seconds == 600
    assert settings.livekit_public_url == ""


def test_dev_default_secret_refused() -> None:
    assert "LIVEKIT_API_SECRET is LiveKit's dev default" in refusal(livekit_api_secret="secret")


def test_short_secret_refused() -> None:
    short = "s" * 31
    message = refusal(livekit_api_secret=short)
    assert "LIVEKIT_API_SECRET must be at least 32 characters" in message
    assert short not in message


def test_missing_values_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as caught:
        Settings()  # type: ignore[call-arg]
    message = describe_settings_error(caught.value)
    assert message == "LIVEKIT_API_KEY is not set; LIVEKIT_API_SECRET is not set; AGENT_NAME is not set"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"agent_name": ""}, "AGENT_NAME must be"),
        ({"agent_name": "has space"}, "AGENT_NAME must be"),
        ({"livekit_public_url": "https://x.example"}, "LIVEKIT_PUBLIC_URL must be a ws:// or wss://"),
        ({"livekit_public_url": "wss://"}, "LIVEKIT_PUBLIC_URL must be"),
        ({"token_ttl_seconds": 86400}, "TOKEN_TTL_SECONDS"),
        ({"room_max_participants": 1}, "ROOM_MAX_PARTICIPANTS"),
        ({"log_level": "loud"}, "LOG_LEVEL must be one of"),
    ],
)
def test_bad_values_refused(overrides: dict[str, object], words: str) -> None:
    assert words in refusal(**overrides)


def test_public_url_normalised() -> None:
    assert make_settings(livekit_public_url=" wss://lk.example.org/ ").livekit_public_url == "wss://lk.example.org"
    assert make_settings(livekit_public_url="ws://10.0.0.2:7880").livekit_public_url == "ws://10.0.0.2:7880"
