"""The agent's tools and settings, without a model or a room."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from voice_agent.settings import DEFAULT_FAQ_PATH, AgentSettings
from voice_agent.tools import Faq, ToolInputError, current_time

BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "APIkey",
    "LIVEKIT_API_SECRET": "s" * 40,
    "AGENT_NAME": "voice-agent",
}


def test_current_time_formats_the_zone_and_offset() -> None:
    noon_utc = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert current_time("Europe/Paris", now=noon_utc) == (
        "It is 13:00 on Monday 23 November 2026 in Europe/Paris (UTC+01:00)."
    )
    assert current_time("America/New_York", now=noon_utc).startswith("It is 07:00 ")
    assert "(UTC-05:00)" in current_time("America/New_York", now=noon_utc)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_current_time_rejects_unknown_zones(zone: str) -> None:
    with pytest.raises(ToolInputError, match="unknown time zone"):
        current_time(zone)


def test_shipped_faq_answers_by_keywords() -> None:
    faq = Faq.load(DEFAULT_FAQ_PATH)
    assert "around the clock" in faq.lookup("When are you open?")
    assert "LiveKit" in faq.lookup("where does my audio go, is it private")
    assert faq.lookup("quantum chromodynamics") == "The FAQ has no answer to that question."


def test_faq_rejects_entries_without_answer(tmp_path: Path) -> None:
    bad = tmp_path / "faq.toml"
    bad.write_text('[[entry]]\nquestion = "Why?"\n')
    with pytest.raises(ValueError, match="entry 0 needs a question and an answer"):
        Faq.load(bad)


def test_settings_say_what_gemini_credentials_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    assert "GOOGLE_API_KEY" in (AgentSettings().missing_model_credentials() or "")
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "1")
    assert "GOOGLE_CLOUD_PROJECT" in (AgentSettings().missing_model_credentials() or "")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    assert AgentSettings().missing_model_credentials() is None
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI")
    monkeypatch.setenv("GOOGLE_API_KEY", "k")
    assert AgentSettings().missing_model_credentials() is None
