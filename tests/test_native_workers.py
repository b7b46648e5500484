"""The native run's AGENT_WORKERS: where each worker's ready file is, and ports that clash."""

from __future__ import annotations

from pathlib import Path

from scripts import stack


def test_the_native_run_refuses_worker_health_ports_that_clash() -> None:
    base = {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 40, "AGENT_HEALTH_PORT": "8081"}
    clash = stack.build_env(env_file=None, base={}, overrides={**base, "AGENT_WORKERS": "3", "SIP_ENABLED": "true",
                                                               "SIP_HEALTH_PORT": "8083"})
    assert stack.check_env(clash) == [
        "SIP_HEALTH_PORT=8083 is one of the agent workers' health ports (AGENT_HEALTH_PORT 8081 to 8083, AGENT_WORKERS=3)"]
    assert stack.check_env({**clash, "AGENT_WORKERS": "2"}) == []
    assert stack.agent_ready_files({**clash, "AGENT_WORKERS": "2"}) == [
        Path(clash["AGENT_READY_FILE"] + ".0"), Path(clash["AGENT_READY_FILE"] + ".1")]
