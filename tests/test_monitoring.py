"""The scrape configuration in the repo is what `scripts.monitoring` writes for the defaults,
and it follows the ports of a given `.env`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts import monitoring, stack


def test_the_committed_scrape_config_is_the_defaults_rendered() -> None:
    committed = (stack.ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    assert committed == monitoring.prometheus_config(stack.build_env(env_file=None, base={})), \
        "regenerate it: python -m scripts.monitoring > deploy/prometheus/prometheus.yml"


def test_the_committed_compose_template_is_the_one_rendered() -> None:
    committed = (stack.ROOT / "deploy" / "prometheus" / "compose.yml").read_text(encoding="utf-8")
    assert committed == monitoring.compose_config(), \
        "regenerate it: python -m scripts.monitoring --compose > deploy/prometheus/compose.yml"
    # docker/prometheus-entrypoint.sh expands it in a shell here-document.
    assert "`" not in committed and "$(" not in committed


def test_the_compose_template_expands_to_a_config_prometheus_accepts(tmp_path: Path) -> None:
    """docker/prometheus-entrypoint.sh fills the template from the environment; promtool checks it."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus) is not installed")
    entrypoint = (stack.ROOT / "docker" / "prometheus-entrypoint.sh").read_text(encoding="utf-8")
    script = tmp_path / "entrypoint.sh"
    script.write_text(entrypoint.replace("/etc/prometheus/compose.yml", str(stack.ROOT / "deploy/prometheus/compose.yml"))
                      .replace(" /prometheus/", f" {tmp_path}/").replace(">/prometheus/", f">{tmp_path}/")
                      .replace("exec /bin/prometheus", "exec true"))
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_SCRAPE_INTERVAL_S": "2", "LIVEKIT_PROMETHEUS_PORT": "6800",
           "TOKEN_SERVER_PORT": "8190", "SIP_ENABLED": "True", "SIP_PROMETHEUS_PORT": "9291"}
    subprocess.run(["sh", str(script)], env=env, check=True)
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "2s"
    static = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
              if "static_configs" in job}
    assert static == {"livekit": ["127.0.0.1:6800"], "token-server": ["127.0.0.1:8190"]}
    assert json.loads((tmp_path / "targets" / "sip.json").read_text()) == [{"targets": ["127.0.0.1:9291"]}]
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    subprocess.run(["sh", str(script)], env={**env, "SIP_ENABLED": "false"}, check=True)
    assert json.loads((tmp_path / "targets" / "sip.json").read_text()) == []


def test_targets_follow_the_settings(tmp_path: Path) -> None:
    env = stack.build_env(env_file=None, base={}, overrides={
        "AGENT_WORKERS": "3", "AGENT_METRICS_PORT": "9400", "TOKEN_SERVER_PORT": "8190",
        "LIVEKIT_PROMETHEUS_PORT": "6800", "STATE_DIR": str(tmp_path)})
    assert monitoring.scrape_targets(env) == {
        "livekit": ["127.0.0.1:6800"], "token-server": ["127.0.0.1:8190"],
        "agent": ["127.0.0.1:9400", "127.0.0.1:9401", "127.0.0.1:9402"]}
    config = yaml.safe_load(monitoring.prometheus_config(env, scrape_interval_s=1))
    assert config["global"]["scrape_interval"] == "1s"
    sip = stack.build_env(env_file=None, base={}, overrides={
        "SIP_ENABLED": "true", "SIP_PROMETHEUS_PORT": "9291", "STATE_DIR": str(tmp_path)})
    assert monitoring.scrape_targets(sip)["sip"] == ["127.0.0.1:9291"]
    off = stack.build_env(env_file=None, base={}, overrides={"AGENT_METRICS_PORT": "0", "STATE_DIR": str(tmp_path)})
    assert "agent" not in monitoring.scrape_targets(off)
