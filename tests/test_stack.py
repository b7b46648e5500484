"""The native run's process list (scripts/stack.py): optional processes follow their setting."""

from __future__ import annotations

import yaml

from scripts.stack import build_env, health_checks, procfile_commands

KEYS = {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 40}


def test_livekit_sip_runs_only_with_sip_enabled() -> None:
    off = build_env(env_file=None, overrides=KEYS, base={})
    assert "sip" not in procfile_commands(env=off) and "sip" not in health_checks(off)
    assert "SIP_CONFIG_BODY" not in off
    on = build_env(env_file=None, overrides={**KEYS, "SIP_ENABLED": "true"}, base={})
    assert list(procfile_commands(env=on))[-1] == "sip"
    assert health_checks(on)["sip"].describe == f"GET http://127.0.0.1:{on['SIP_HEALTH_PORT']}/"


def test_livekit_sip_shares_livekit_servers_redis_and_advertises_the_node_ip() -> None:
    env = build_env(env_file=None, overrides={**KEYS, "SIP_ENABLED": "true", "LIVEKIT_NODE_IP": "203.0.113.9"}, base={})
    config = yaml.safe_load(env["SIP_CONFIG_BODY"])
    assert config["redis"] == {"address": env["REDIS_HOST"]}
    assert (config["nat_1_to_1_ip"], config["sip_port"], config["rtp_port"]) == ("203.0.113.9", 5060, "10000-20000")
    assert (config["api_key"], config["ws_url"]) == ("key", env["LIVEKIT_URL"])
    assert config["max_cpu_utilization"] == 0.9 and "listen_ip" not in config
