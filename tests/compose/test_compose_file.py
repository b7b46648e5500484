"""compose.yaml, its Dockerfiles and scripts/init-env, checked without a Docker engine.

These run in every `./scripts/test`; the stack itself runs in `scripts/test-compose`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.stack import ROOT, parse_env_file

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict] = COMPOSE["services"]
#: Tools run on demand (`docker compose run --rm doctor`), never by `up` (profile tools).
TOOLS = {name for name, service in SERVICES.items() if "tools" in service.get("profiles", [])}
#: One-shot jobs (`restart: "no"`): they run to completion at every `up` (sip-provision).
JOBS = {name for name, service in SERVICES.items() if service.get("restart") == "no"} - TOOLS
SECRETS = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "APPLIANCE_REDIS_PASSWORD")


def seconds(duration: str) -> int:
    """Compose durations such as ``11m`` or ``1m30s``, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", duration))


def dockerfile_stage(service: dict) -> str:
    """The text of the Dockerfile stage a built service's image comes from."""
    text = (ROOT / service["build"]["dockerfile"]).read_text(encoding="utf-8")
    stages = re.split(r"(?m)^FROM ", text)[1:]
    target = service["build"].get("target")
    if target is None:
        return stages[-1]
    return next(stage for stage in stages if re.match(rf"\S+ AS {re.escape(target)}\s", stage))


@pytest.mark.parametrize("name", sorted(set(SERVICES) - JOBS - TOOLS))
def test_every_service_is_health_checked_and_restarts(name: str) -> None:
    service = SERVICES[name]
    assert service.get("restart") == "unless-stopped"
    if "build" in service:
        assert "HEALTHCHECK" in dockerfile_stage(service), f"{name}: its image has no HEALTHCHECK"
    else:
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    for dependency, condition in service.get("depends_on", {}).items():
        expected = "service_completed_successfully" if dependency in JOBS else "service_healthy"
        assert condition == {"condition": expected}, f"{name} -> {dependency}"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_one_shot_jobs_wait_for_what_they_need_and_are_waited_for(name: str) -> None:
    job = SERVICES[name]
    assert job.get("healthcheck") == {"disable": True}, f"{name}: a job has no health to check"
    assert all(c == {"condition": "service_healthy"} for c in job.get("depends_on", {}).values()), name
    assert any(name in s.get("depends_on", {}) for s in SERVICES.values()), f"nothing waits for {name}"


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tools_run_only_when_asked_and_nothing_waits_for_them(name: str) -> None:
    tool = SERVICES[name]
    assert tool.get("restart") == "no" and tool.get("healthcheck") == {"disable": True}, name
    assert not any(name in s.get("depends_on", {}) for s in SERVICES.values()), f"something waits for {name}"


def test_telephony_is_an_opt_in_profile_configured_like_the_native_run() -> None:
    """The `sip` service's SIP_CONFIG_BODY sets the keys scripts/stack.py's sip_config sets."""
    from scripts.stack import build_env, sip_config

    telephony = {name for name, service in SERVICES.items() if "telephony" in service.get("profiles", [])}
    assert telephony == {"sip", "sip-provision"}
    body = SERVICES["sip"]["environment"]["SIP_CONFIG_BODY"]
    compose_keys = set(yaml.safe_load(re.sub(r"\$\{[^}]*\}", "1", body)))
    native = build_env(env_file=None, overrides={"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 40,
                                                   "SIP_ENABLED": "true", "SIP_LISTEN_IP": "127.0.0.1"})
    native_keys = set(yaml.safe_load(sip_config(native)))
    assert compose_keys == native_keys, compose_keys ^ native_keys


def test_upstream_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if "build" in service or service["image"].startswith("voice-appliance/"):  # built from this tree
            continue
        tag = service["image"].rsplit(":", 1)[-1]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not pinned to a release"
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        for image in re.findall(r"(?m)^ARG \w+_IMAGE=(\S+)", dockerfile.read_text()):
            assert re.search(r":\d+\.\d+\.\d+", image), f"{dockerfile.name}: {image} is not pinned"


def test_the_agent_may_drain_its_calls_before_it_is_killed() -> None:
    from voice_agent.settings import AgentSettings

    drain_s = AgentSettings.model_fields["drain_timeout_s"].default
    for name in ("agent", "livekit"):
        assert seconds(SERVICES[name]["stop_grace_period"]) > drain_s, name


def test_secrets_have_no_defaults() -> None:
    """A missing secret stops `compose up` with a message instead of starting with a default."""
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}(:[-?][^}}]*)?\}}", text)
        assert uses, secret
        assert not any(use.startswith(":-") for use in uses), f"{secret} has a default"
        assert any(use.startswith(":?") for use in uses), f"{secret} is not required"


def test_only_the_front_door_keeps_privileges() -> None:
    for name, service in SERVICES.items():
        assert service.get("network_mode") == "host", name
        assert service.get("cap_drop") == ["ALL"], name
        if name != "web":  # Caddy binds 80/443 through a file capability, which no-new-privileges blocks
            assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_init_env_writes_fresh_secrets_once(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    subprocess.run([str(ROOT / "scripts" / "init-env"), str(env_file)], check=True, capture_output=True)
    first = parse_env_file(env_file)
    assert all(len(first[s]) >= 15 for s in SECRETS)
    assert len(first["LIVEKIT_API_SECRET"]) >= 32
    assert env_file.stat().st_mode & 0o077 == 0, "readable by others"
    subprocess.run([str(ROOT / "scripts" / "init-env"), str(env_file)], check=True, capture_output=True)
    assert parse_env_file(env_file) == first, "a second run changed the secrets"
    other = tmp_path / "other.env"
    subprocess.run([str(ROOT / "scripts" / "init-env"), str(other)], check=True, capture_output=True)
    assert all(parse_env_file(other)[s] != first[s] for s in SECRETS)


def test_every_setting_compose_needs_is_in_env_example() -> None:
    """Variables compose.yaml requires (`${VAR:?...}`) are documented in .env.example."""
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "compose.yaml").read_text(encoding="utf-8")))
    assert required <= set(parse_env_file(ROOT / ".env.example")), required - set(parse_env_file(ROOT / ".env.example"))


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_the_front_door_caddyfile_is_valid() -> None:
    env = {"PUBLIC_HOST": "appliance.example.com", "HTTPS_PORT": "443", "HTTP_PORT": "80",
           "WEB_HEALTH_PORT": "8079", "TOKEN_SERVER_UPSTREAM": "127.0.0.1:8090",
           "LIVEKIT_UPSTREAM": "127.0.0.1:7880", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(ROOT / "docker" / "Caddyfile")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"appliance.example.com"' in result.stdout


def test_the_worker_file_runs_compose_yamls_agent_and_nothing_else() -> None:
    """compose.worker.yaml (agent-only machines) is compose.yaml's agent: same image, build,
    hardening, network and drain grace period; only where it registers and its Redis differ."""
    worker_file = yaml.safe_load((ROOT / "compose.worker.yaml").read_text(encoding="utf-8"))
    assert list(worker_file["services"]) == ["agent"]
    worker, agent = worker_file["services"]["agent"], SERVICES["agent"]
    for key in ("build", "image", "network_mode", "restart", "cap_drop", "security_opt", "stop_grace_period",
                "env_file", "logging"):
        assert worker.get(key) == agent.get(key), key
    assert "depends_on" not in worker
    assert worker["environment"]["AGENT_HEALTH_PORT"] == agent["environment"]["AGENT_HEALTH_PORT"] == "0"
    assert worker["environment"]["LIVEKIT_URL"].startswith("${LIVEKIT_URL:?")
    documented = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in re.findall(r"\$\{(\w+):[?-]", (ROOT / "compose.worker.yaml").read_text(encoding="utf-8")):
        assert re.search(rf"(?m)^#? ?{name}=", documented), f"{name} is not in .env.example"
