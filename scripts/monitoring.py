"""Prometheus scrape configuration for the appliance's services, from its settings.

Two outputs, each kept in step with its file in the repo by a test:

- `deploy/prometheus/prometheus.yml`, the native run's (`python -m scripts.monitoring >
  deploy/prometheus/prometheus.yml`) for the default `.env`: static targets on loopback.
- `deploy/prometheus/compose.yml`, the compose profile `monitoring`'s (`python -m
  scripts.monitoring --compose > deploy/prometheus/compose.yml`): a template whose `${NAME}`
  placeholders `docker/prometheus-entrypoint.sh` fills from the container's environment
  (the ports in `.env`). Agent replicas share the host's network, so each takes a free port
  and names it in a file of its own (Prometheus's file-based discovery, `AGENT_METRICS_TARGETS_DIR`);
  livekit-sip's target file is written by the entrypoint, empty unless `SIP_ENABLED`.

Jobs, each on this machine's loopback:

    livekit        livekit-server's `prometheus.port` (livekit.yaml; LIVEKIT_PROMETHEUS_PORT)
    token-server   the token server's GET /metrics (TOKEN_SERVER_PORT)
    agent          one target per worker: AGENT_METRICS_PORT + N, N < AGENT_WORKERS
    sip            livekit-sip's `prometheus_port` (SIP_PROMETHEUS_PORT), with SIP_ENABLED
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import yaml

from scripts import stack

#: How often Prometheus scrapes every target (s).
SCRAPE_INTERVAL_S = 15
#: In the compose profile: where Prometheus reads the agent replicas' target files (the
#: `metrics-targets` volume) and the entrypoint's livekit-sip target file.
COMPOSE_AGENT_TARGETS = "/etc/prometheus/agents/*.json"
COMPOSE_SIP_TARGETS = "/prometheus/targets/sip.json"


def scrape_targets(env: Mapping[str, str]) -> dict[str, list[str]]:
    """Job name -> `host:port` targets of the services that run with `env`."""
    config = yaml.safe_load(stack.LIVEKIT_CONFIG.read_text(encoding="utf-8"))
    livekit = int(env.get("LIVEKIT_PROMETHEUS_PORT") or config["prometheus"]["port"])
    jobs = {"livekit": [f"127.0.0.1:{livekit}"], "token-server": [f"127.0.0.1:{env['TOKEN_SERVER_PORT']}"]}
    agent = int(env.get("AGENT_METRICS_PORT") or 0)
    if agent:
        jobs["agent"] = [f"127.0.0.1:{agent + n}" for n in range(int(env.get("AGENT_WORKERS") or 1))]
    if stack.process_enabled(env, "sip") and env.get("SIP_PROMETHEUS_PORT"):
        jobs["sip"] = [f"127.0.0.1:{env['SIP_PROMETHEUS_PORT']}"]
    return jobs


def _config(header: str, interval: str, scrape_configs: list[dict[str, Any]]) -> str:
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
              "scrape_configs": scrape_configs}
    return header + yaml.safe_dump(config, sort_keys=False)


def prometheus_config(env: Mapping[str, str], scrape_interval_s: float = SCRAPE_INTERVAL_S) -> str:
    """prometheus.yml (YAML) scraping `scrape_targets(env)`."""
    header = ("# Prometheus scrape configuration for the native appliance (./scripts/run) with the\n"
              "# default ports; written by `python -m scripts.monitoring` (README \"Monitoring\").\n")
    return _config(header, f"{scrape_interval_s:g}s", [
        {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in scrape_targets(env).items()])


def compose_config() -> str:
    """The compose profile's prometheus.yml template (YAML with `${NAME}` placeholders for
    `docker/prometheus-entrypoint.sh`, which expands it in a shell here-document: so no
    backquotes and no `$(` in it)."""
    header = ("# Prometheus scrape configuration of the compose profile monitoring (compose.yaml): a\n"
              "# template the prometheus service fills from .env (docker/prometheus-entrypoint.sh).\n"
              "# Written by: python -m scripts.monitoring --compose (README \"Monitoring\").\n")
    refresh = "${PROMETHEUS_SCRAPE_INTERVAL_S}s"
    return _config(header, refresh, [
        {"job_name": "livekit", "static_configs": [{"targets": ["127.0.0.1:${LIVEKIT_PROMETHEUS_PORT}"]}]},
        {"job_name": "token-server", "static_configs": [{"targets": ["127.0.0.1:${TOKEN_SERVER_PORT}"]}]},
        {"job_name": "agent", "file_sd_configs": [{"files": [COMPOSE_AGENT_TARGETS], "refresh_interval": refresh}]},
        {"job_name": "sip", "file_sd_configs": [{"files": [COMPOSE_SIP_TARGETS], "refresh_interval": refresh}]},
    ])


if __name__ == "__main__":
    if sys.argv[1:] == ["--compose"]:
        sys.stdout.write(compose_config())
    elif sys.argv[1:]:
        sys.exit("usage: python -m scripts.monitoring [--compose]")
    else:
        sys.stdout.write(prometheus_config(stack.build_env(env_file=None, base={})))
