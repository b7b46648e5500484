"""Prometheus scrape configuration for the appliance's services, from its settings.

`deploy/prometheus/prometheus.yml` is this module's output for the default `.env`
(`python -m scripts.monitoring > deploy/prometheus/prometheus.yml`; a test keeps the two in
step). Jobs, each on this machine's loopback:

    livekit        livekit-server's `prometheus.port` (livekit.yaml; LIVEKIT_PROMETHEUS_PORT)
    token-server   the token server's GET /metrics (TOKEN_SERVER_PORT)
    agent          one target per worker: AGENT_METRICS_PORT + N, N < AGENT_WORKERS
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import yaml

from scripts import stack

#: How often Prometheus scrapes every target (s).
SCRAPE_INTERVAL_S = 15


def scrape_targets(env: Mapping[str, str]) -> dict[str, list[str]]:
    """Job name -> `host:port` targets of the services that run with `env`."""
    config = yaml.safe_load(stack.LIVEKIT_CONFIG.read_text(encoding="utf-8"))
    livekit = int(env.get("LIVEKIT_PROMETHEUS_PORT") or config["prometheus"]["port"])
    jobs = {"livekit": [f"127.0.0.1:{livekit}"], "token-server": [f"127.0.0.1:{env['TOKEN_SERVER_PORT']}"]}
    agent = int(env.get("AGENT_METRICS_PORT") or 0)
    if agent:
        jobs["agent"] = [f"127.0.0.1:{agent + n}" for n in range(int(env.get("AGENT_WORKERS") or 1))]
    return jobs


def prometheus_config(env: Mapping[str, str], scrape_interval_s: float = SCRAPE_INTERVAL_S) -> str:
    """prometheus.yml (YAML) scraping `scrape_targets(env)`."""
    interval = f"{scrape_interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in scrape_targets(env).items()
        ],
    }
    header = ("# Prometheus scrape configuration for the native appliance (./scripts/run) with the\n"
              "# default ports; written by `python -m scripts.monitoring` (README \"Monitoring\").\n")
    return header + yaml.safe_dump(config, sort_keys=False)


if __name__ == "__main__":
    sys.stdout.write(prometheus_config(stack.build_env(env_file=None, base={})))
