"""`python -m voice_agent`: bad settings give one line per mistake and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

AGENT_DIR = Path(__file__).resolve().parents[1]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_", "GEMINI_"))}
    return subprocess.run(
        [sys.executable, "-m", "voice_agent", *args],
        # No metrics server: port 9300 may be any other worker's on a shared machine.
        env={**clean, "AGENT_METRICS_PORT": "0", **env, "PYTHONPATH": os.pathsep.join([str(AGENT_DIR), str(AGENT_DIR.parent / "calls")])},
        capture_output=True,
        text=True,
        timeout=180,  # importing livekit-agents takes tens of seconds on a busy 2-core box
    )


def test_missing_settings_are_named_one_line_each() -> None:
    result = run_cli({}, "start")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME")
    assert len(lines) == len(names), result.stderr
    for line, name in zip(lines, names, strict=True):
        assert line == f"voice_agent: invalid setting {name}: Field required"


def test_a_bad_mcp_server_entry_names_the_field() -> None:
    env = {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 40,
           "AGENT_NAME": "a", "MCP_SERVERS": '[{"name": "crm", "url": "https://crm.example.org/mcp"}]',
           "AGENT_TOOL_FILLER_AFTER_S": "-1"}
    result = run_cli(env, "start")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "voice_agent: invalid setting MCP_SERVERS[0].allowed_tools: Field required",
        "voice_agent: invalid setting AGENT_TOOL_FILLER_AFTER_S: Input should be greater than or equal to 0",
    ]


def test_unknown_command_is_refused() -> None:
    result = run_cli(_worker_env(), "dance")
    assert result.returncode == 2
    assert "usage: python -m voice_agent start" in result.stderr


def test_an_untested_google_plugin_is_refused_at_start() -> None:
    """The adapter (plugin_adapter.py) reaches into the plugin: another version must not start silently."""
    from voice_agent.plugin_adapter import TESTED_VERSIONS, UntestedVersionError, check_versions

    tested = {name: versions[0] for name, versions in TESTED_VERSIONS.items()}
    check_versions(tested)
    for name in TESTED_VERSIONS:
        try:
            check_versions({**tested, name: "99.0.0"})
        except UntestedVersionError as exc:
            assert f"{name} 99.0.0" in str(exc) and TESTED_VERSIONS[name][0] in str(exc)
        else:
            raise AssertionError(f"an untested {name} was accepted")


def test_the_worker_refuses_an_untested_plugin_with_one_line() -> None:
    """At start-up, before the worker registers: exit 2 and one line (no traceback)."""
    script = ("import sys; from voice_agent import plugin_adapter as a; "
              "a.installed_versions = lambda: {**{n: v[0] for n, v in a.TESTED_VERSIONS.items()}, "
              "'livekit-plugins-google': '1.9.0'}; "
              "from voice_agent.__main__ import main; sys.exit(main(['start']))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_", "GEMINI_"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **_worker_env(AGENT_METRICS_PORT="0"),
             "PYTHONPATH": os.pathsep.join([str(AGENT_DIR), str(AGENT_DIR.parent / "calls")])},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voice_agent: livekit-plugins-google 1.9.0 is installed"), lines


def _worker_env(**extra: str) -> dict[str, str]:
    return {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 40,
            "AGENT_NAME": "a", "GOOGLE_API_KEY": "x",
            # Not the default 9300: another stack on this machine may hold it.
            "AGENT_METRICS_PORT": str(free_port()), **extra}


@pytest.mark.parametrize("case", ["faq-malformed", "faq-missing", "faq-entry", "ca-missing", "ca-not-pem"])
def test_a_bad_file_stops_the_worker_before_it_registers(tmp_path: Path, case: str) -> None:
    """Before, the worker registered and each job failed on the file after taking a call."""
    bad = tmp_path / "bad"
    variable, content = {
        "faq-malformed": ("AGENT_FAQ_PATH", "[[entry]\nquestion = "),
        "faq-missing": ("AGENT_FAQ_PATH", None),
        "faq-entry": ("AGENT_FAQ_PATH", '[[entry]]\nquestion = "What?"\n'),
        "ca-missing": ("GEMINI_CA_FILE", None),
        "ca-not-pem": ("GEMINI_CA_FILE", "not a certificate\n"),
    }[case]
    if content is not None:
        bad.write_text(content)
    result = run_cli(_worker_env(**{variable: str(bad)}), "start")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"voice_agent: cannot start: {variable}={bad}: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("preset", "expected"), [(None, "300"), ("90", "90")])
def test_the_loop_monitor_threshold_reaches_livekit_agents(
    monkeypatch: pytest.MonkeyPatch, preset: str | None, expected: str
) -> None:
    """AGENT_LOOP_BLOCK_WARN_MS becomes livekit-agents' own variable, which each job reads;
    a value set for livekit-agents directly wins."""
    from voice_agent.__main__ import main

    for name, value in {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 40,
                        "AGENT_NAME": "a", "GOOGLE_API_KEY": "x", "AGENT_METRICS_PORT": "0",
                        "AGENT_LOOP_BLOCK_WARN_MS": "300"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", raising=False)
    if preset is not None:
        monkeypatch.setenv("LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", preset)
    assert main(["dance"]) == 2
    assert os.environ["LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"] == expected
