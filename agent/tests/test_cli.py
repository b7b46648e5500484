"""`python -m voice_agent`: bad settings give one line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parents[1]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_", "GEMINI_"))}
    return subprocess.run(
        [sys.executable, "-m", "voice_agent", *args],
        env={**clean, **env, "PYTHONPATH": os.pathsep.join([str(AGENT_DIR), str(AGENT_DIR.parent / "calls")])},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_settings_are_named_in_one_line() -> None:
    result = run_cli({}, "start")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voice_agent: invalid settings:")
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME"):
        assert name in lines[0]


def test_unknown_command_is_refused() -> None:
    env = {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 40,
           "AGENT_NAME": "a", "GOOGLE_API_KEY": "x"}
    result = run_cli(env, "dance")
    assert result.returncode == 2
    assert "usage: python -m voice_agent start" in result.stderr


def test_an_untested_google_plugin_is_refused_at_start() -> None:
    """The adapter (resilience.py) reaches into the plugin: another version must not start silently."""
    from voice_agent.resilience import TESTED_PLUGIN_VERSIONS, UntestedPluginError, check_plugin_version

    check_plugin_version(TESTED_PLUGIN_VERSIONS[0])
    try:
        check_plugin_version("99.0.0")
    except UntestedPluginError as exc:
        assert "99.0.0" in str(exc) and TESTED_PLUGIN_VERSIONS[0] in str(exc)
    else:
        raise AssertionError("an untested plugin version was accepted")
