"""The scrape configuration in the repo is what `scripts.monitoring` writes for the defaults,
and it follows the ports of a given `.env`."""

from __future__ import annotations

from pathlib import Path

import yaml

from scripts import monitoring, stack


def test_the_committed_scrape_config_is_the_defaults_rendered() -> None:
    committed = (stack.ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    assert committed == monitoring.prometheus_config(stack.build_env(env_file=None, base={})), \
        "regenerate it: python -m scripts.monitoring > deploy/prometheus/prometheus.yml"


def test_targets_follow_the_settings(tmp_path: Path) -> None:
    env = stack.build_env(env_file=None, base={}, overrides={
        "AGENT_WORKERS": "3", "AGENT_METRICS_PORT": "9400", "TOKEN_SERVER_PORT": "8190",
        "LIVEKIT_PROMETHEUS_PORT": "6800", "STATE_DIR": str(tmp_path)})
    assert monitoring.scrape_targets(env) == {
        "livekit": ["127.0.0.1:6800"], "token-server": ["127.0.0.1:8190"],
        "agent": ["127.0.0.1:9400", "127.0.0.1:9401", "127.0.0.1:9402"]}
    config = yaml.safe_load(monitoring.prometheus_config(env, scrape_interval_s=1))
    assert config["global"]["scrape_interval"] == "1s"
    off = stack.build_env(env_file=None, base={}, overrides={"AGENT_METRICS_PORT": "0", "STATE_DIR": str(tmp_path)})
    assert "agent" not in monitoring.scrape_targets(off)
