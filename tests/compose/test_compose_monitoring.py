"""The compose profile `monitoring`: Prometheus (the upstream image, or its stand-in from
Debian's `prometheus`) scrapes every service of the running compose stack.

Run by `scripts/test-compose` (skipped otherwise), on the stack the other compose tests use
(conftest.py brings it up with the `telephony` and `monitoring` profiles, scraping every second).
"""

from __future__ import annotations

import pytest

from tests.compose.harness import ComposeStack
from tests.e2e.harness import listening_addresses
from tests.e2e.test_metrics import prometheus_api, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.compose, pytest.mark.timeout(900)]

#: Every job of deploy/prometheus/compose.yml, with a metric each exports.
JOBS = {"livekit": "go_goroutines", "token-server": "token_server_tokens_issued_total",
        "agent": "voice_agent_calls_active", "sip": "go_goroutines"}


def test_prometheus_sees_every_service_up(compose_stack: ComposeStack) -> None:
    port = int(compose_stack.env["PROMETHEUS_PORT"])
    assert listening_addresses(port) == {"127.0.0.1"}, "Prometheus listens beyond loopback"
    targets: list[dict] = []

    def all_up() -> bool:
        nonlocal targets
        try:
            targets = prometheus_api(port, "targets")["activeTargets"]
        except OSError:
            return False
        return {t["labels"]["job"] for t in targets} == set(JOBS) and all(t["health"] == "up" for t in targets)

    try:
        wait_for(all_up, 60, "every target up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets]}") from None
    for job, metric in JOBS.items():
        assert prometheus_api(port, "query", query=f'{metric}{{job="{job}"}}')["result"], f"{metric} from {job}"
