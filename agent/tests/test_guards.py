"""The call length limit: the caller is warned, then hears a goodbye, then the call ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from voice_agent import guards
from voice_agent.settings import AgentSettings


class Handle:
    def __init__(self, playout_s: float) -> None:
        self.playout_s = playout_s

    async def wait_for_playout(self) -> None:
        await asyncio.sleep(self.playout_s)


class Session:
    """Records `generate_reply` calls and when they came."""

    def __init__(self, playout_s: float = 0.05) -> None:
        self.replies: list[tuple[float, str]] = []
        self.playout_s = playout_s

    def generate_reply(self, *, instructions: str) -> Handle:
        self.replies.append((time.monotonic(), instructions))
        return Handle(self.playout_s)


async def test_warned_then_goodbye_then_ended_at_the_limit() -> None:
    session, ended = Session(), []
    started = time.monotonic()

    async def end(reason: str) -> None:
        ended.append((time.monotonic(), reason))

    await guards.limit_call_length(session, max_call_s=0.6, warning_s=0.4, end=end)
    (warned_at, warning), (bye_at, goodbye) = session.replies
    assert warned_at - started == pytest.approx(0.2, abs=0.1)
    assert warning == guards.WARNING.format(minutes=guards._duration(0.6), left=guards._duration(0.4))
    assert bye_at - started == pytest.approx(0.6, abs=0.1) and goodbye == guards.GOODBYE
    assert ended == [(pytest.approx(bye_at + 0.05, abs=0.05), guards.END_REASON)]


def test_the_warning_names_the_limit_in_words() -> None:
    text = guards.WARNING.format(minutes=guards._duration(1800), left=guards._duration(60))
    assert "time limit of 30 minutes and will end in about one minute" in text


async def test_a_goodbye_that_never_finishes_does_not_hold_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guards, "GOODBYE_PLAYOUT_S", 0.2)
    session, ended = Session(playout_s=60), []

    async def end(reason: str) -> None:
        ended.append(reason)

    await asyncio.wait_for(guards.limit_call_length(session, max_call_s=0.1, warning_s=0, end=end), 2)
    assert [text for _, text in session.replies] == [guards.GOODBYE] and ended == [guards.END_REASON]


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"LIVEKIT_URL": "ws://x", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s",
                       "AGENT_NAME": "a", "AGENT_MAX_CALL_S": "900", "AGENT_MAX_CALL_WARNING_S": "30"}.items():
        monkeypatch.setenv(key, value)
    settings = AgentSettings()
    assert (settings.max_call_s, settings.max_call_warning_s) == (900, 30)
    monkeypatch.setenv("MODEL_PRICES_USD_PER_MTOK", "output_audio=oops")
    with pytest.raises(ValueError, match="output_audio: 'oops' is not a price"):
        AgentSettings()
