"""VIDEO_INPUT: the token grants exactly the sources it names, and the answer says which."""

from __future__ import annotations

import pytest
from livekit import api
from pydantic import ValidationError

from tests import openapi_check
from token_server import Settings, create_app
from token_server.settings import describe_settings_error
from token_server.tokens import publish_sources

from tokenserver_testing import AGENT_NAME, API_KEY, API_SECRET, make_settings

EXPECTED = {
    "off": ["microphone"],
    "camera": ["microphone", "camera"],
    "screen": ["microphone", "screen_share"],
    "both": ["microphone", "camera", "screen_share"],
}


@pytest.mark.parametrize(("video_input", "sources"), EXPECTED.items())
def test_the_token_grants_exactly_the_sources_video_input_names(video_input: str, sources: list[str]) -> None:
    client = create_app(make_settings(video_input=video_input)).test_client()
    response = client.post("/api/token", json={})
    assert response.status_code == 201
    openapi_check.problems("/api/token", "post", response.status_code, response.headers, response.mimetype,
                           response.data)
    body = response.get_json()
    assert body["publish_sources"] == sources
    grants = api.TokenVerifier(API_KEY, API_SECRET).verify(body["participant_token"]).video
    assert grants is not None and grants.can_publish_sources == sources
    assert "screen_share_audio" not in grants.can_publish_sources
    assert publish_sources(video_input) == sources  # type: ignore[arg-type]


def test_video_input_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEO_INPUT", "screen")
    settings = Settings(livekit_api_key=API_KEY, livekit_api_secret=API_SECRET, agent_name=AGENT_NAME)
    assert settings.video_input == "screen"
    monkeypatch.delenv("VIDEO_INPUT")
    assert Settings(livekit_api_key=API_KEY, livekit_api_secret=API_SECRET, agent_name=AGENT_NAME).video_input == "off"


@pytest.mark.parametrize("value", ["on", "video", "camera,screen", "screen_share_audio"])
def test_an_unknown_video_input_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(video_input=value)
    message = describe_settings_error(refused.value)
    assert message.startswith("VIDEO_INPUT ") and "\n" not in message
    assert "'off'" in message and "'both'" in message
