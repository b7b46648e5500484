"""Gemini Live's turn-taking settings (`GEMINI_VAD_*`, `GEMINI_BARGE_IN`) reach the model's
setup: the real model builder connects to the stand-in, which records the setup frame and
runs its VAD with what arrived."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.standins.gemini_live import SENSITIVITY_DB, GeminiLiveStandin, StandinConfig
from voice_agent.model import build_realtime_model
from voice_agent.settings import AgentSettings

BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:1",
    "LIVEKIT_API_KEY": "key",
    "LIVEKIT_API_SECRET": "s" * 40,
    "AGENT_NAME": "voice-agent",
    "GOOGLE_API_KEY": "stand-in-key",
}


@pytest.fixture()
def standin() -> Iterator[GeminiLiveStandin]:
    with GeminiLiveStandin(StandinConfig()) as server:
        yield server


def settings_with(monkeypatch: pytest.MonkeyPatch, standin: GeminiLiveStandin, **env: str) -> AgentSettings:
    for name in list(os.environ):
        if name.startswith(("GEMINI_", "AGENT_", "GOOGLE_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in {**BASE_ENV, "GEMINI_BASE_URL": standin.base_url,
                        "GEMINI_CA_FILE": str(standin.ca_file), **env}.items():
        monkeypatch.setenv(name, value)
    return AgentSettings()


async def setup_of(settings: AgentSettings, standin: GeminiLiveStandin) -> dict:
    """Open a session with the model the agent builds; the setup frame the stand-in got."""
    model = build_realtime_model(settings)
    session = model.session()
    try:
        records = await asyncio.to_thread(standin.wait_for, lambda ss: ss and ss[-1].setup, 15)
    finally:
        await session.aclose()
    record = records[-1]
    assert record.setup is not None
    return {"config": record.setup.realtime_input_config, "record": record}


async def test_defaults_answer_quickly_on_gemini_and_vertex_alike(
    monkeypatch: pytest.MonkeyPatch, standin: GeminiLiveStandin
) -> None:
    got = await setup_of(settings_with(monkeypatch, standin), standin)
    assert got["config"] == {
        "automatic_activity_detection": {"end_of_speech_sensitivity": "END_SENSITIVITY_HIGH",
                                         "silence_duration_ms": 500},
        "activity_handling": "START_OF_ACTIVITY_INTERRUPTS",
    }
    record = got["record"]
    base = standin.config.vad_threshold_dbfs
    assert record.vad_silence_ms == 500 and record.vad_end_dbfs == base + SENSITIVITY_DB


async def test_every_turn_taking_setting_reaches_the_model(
    monkeypatch: pytest.MonkeyPatch, standin: GeminiLiveStandin
) -> None:
    settings = settings_with(
        monkeypatch, standin,
        GEMINI_VAD_SILENCE_MS="800", GEMINI_VAD_PREFIX_PADDING_MS="120",
        GEMINI_VAD_START_SENSITIVITY="low", GEMINI_VAD_END_SENSITIVITY="low", GEMINI_BARGE_IN="false",
    )
    got = await setup_of(settings, standin)
    assert got["config"] == {
        "automatic_activity_detection": {
            "start_of_speech_sensitivity": "START_SENSITIVITY_LOW",
            "end_of_speech_sensitivity": "END_SENSITIVITY_LOW",
            "prefix_padding_ms": 120,
            "silence_duration_ms": 800,
        },
        "activity_handling": "NO_INTERRUPTION",
    }
    record = got["record"]
    assert (record.vad_silence_ms, record.vad_prefix_ms) == (800, 120)


def test_a_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch, standin: GeminiLiveStandin) -> None:
    with pytest.raises(Exception, match="GEMINI_VAD_END_SENSITIVITY"):
        settings_with(monkeypatch, standin, GEMINI_VAD_END_SENSITIVITY="medium")
