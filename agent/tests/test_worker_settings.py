"""Worker settings: where a worker serves its health endpoint when several share a host, and
how many calls it takes."""

from __future__ import annotations

import os

import pytest

from voice_agent.settings import CALLS_PER_CORE, AgentSettings

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



def test_a_worker_takes_calls_per_core_of_the_cpus_it_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AGENT_MAX_CALLS", raising=False)
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus)})
        assert AgentSettings().max_calls == CALLS_PER_CORE
    finally:
        os.sched_setaffinity(0, cpus)
    assert AgentSettings().max_calls == CALLS_PER_CORE * len(cpus)
    monkeypatch.setenv("AGENT_MAX_CALLS", "5")
    assert AgentSettings().max_calls == 5
