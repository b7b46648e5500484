"""The native run's process list (scripts/stack.py): optional processes follow their setting,
and the stack's Redis has a generated password that every process is given."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from scripts.stack import ENV_EXAMPLE, build_env, ensure_env_file, health_checks, parse_env_file, procfile_commands

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
    with_password = build_env(env_file=None, base={},
                              overrides={**KEYS, "SIP_ENABLED": "true", "APPLIANCE_REDIS_PASSWORD": "pw-1"})
    assert yaml.safe_load(with_password["SIP_CONFIG_BODY"])["redis"] == {"address": env["REDIS_HOST"], "password": "pw-1"}
    assert (config["nat_1_to_1_ip"], config["sip_port"], config["rtp_port"]) == ("203.0.113.9", 5060, "10000-20000")
    assert (config["api_key"], config["ws_url"]) == ("key", env["LIVEKIT_URL"])
    assert config["max_cpu_utilization"] == 0.9 and "listen_ip" not in config


def test_a_new_env_file_gets_a_redis_password_and_an_old_one_is_completed(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.env"
    assert ensure_env_file(fresh)
    password = parse_env_file(fresh)["APPLIANCE_REDIS_PASSWORD"]
    assert len(password) >= 40
    assert not ensure_env_file(fresh) and parse_env_file(fresh)["APPLIANCE_REDIS_PASSWORD"] == password

    old = tmp_path / "old.env"  # written before the native Redis had a password
    old.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                           if not line.startswith("APPLIANCE_REDIS_PASSWORD")).replace("LIVEKIT_API_KEY=\n", "LIVEKIT_API_KEY=APIkeep\n"))
    assert ensure_env_file(old)
    values = parse_env_file(old)
    assert values["LIVEKIT_API_KEY"] == "APIkeep" and len(values["APPLIANCE_REDIS_PASSWORD"]) >= 40


def test_every_process_reaches_redis_with_its_password_and_internal_ports_stay_local() -> None:
    env = build_env(env_file=None, base={}, overrides={**KEYS, "APPLIANCE_REDIS_PASSWORD": "p@ss/word"})
    url = urlsplit(env["REDIS_URL"])
    assert (url.password, url.hostname, url.port) == ("p%40ss%2Fword", "127.0.0.1", int(env["REDIS_PORT"]))
    assert env["REDIS_PASSWORD"] == "p@ss/word"  # livekit-server's
    assert env["AGENT_HEALTH_HOST"] == env["TOKEN_SERVER_HOST"] == "127.0.0.1"
    assert yaml.safe_load(env["LIVEKIT_CONFIG"])["bind_addresses"] == ["127.0.0.1"]
