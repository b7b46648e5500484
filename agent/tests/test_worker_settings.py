"""Where a worker serves its health endpoint when several share a host."""

from __future__ import annotations

import pytest

from voice_agent.settings import AgentSettings

REQUIRED = {"LIVEKIT_URL": "ws://127.0.0.1:7880", "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 32,
            "AGENT_NAME": "voice-agent"}


@pytest.mark.parametrize("port, index, bound", [("8081", None, 8081), ("8081", "2", 8083), ("0", "2", 0)])
def test_worker_n_serves_health_on_the_base_port_plus_n(
    monkeypatch: pytest.MonkeyPatch, port: str, index: str | None, bound: int
) -> None:
    for name, value in {**REQUIRED, "AGENT_HEALTH_PORT": port}.items():
        monkeypatch.setenv(name, value)
    if index is None:
        monkeypatch.delenv("AGENT_WORKER_INDEX", raising=False)
    else:
        monkeypatch.setenv("AGENT_WORKER_INDEX", index)
    assert AgentSettings().worker_health_port == bound

