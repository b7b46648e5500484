"""Metrics over the real stack: a call as the agent counts it, and a Prometheus (Debian's
`prometheus`) scraping every service with the repo's scrape configuration.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from voice_calls import budget

from scripts import monitoring
from tests.audio import synthesize
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack
from tests.ports import free_port
from tests.e2e.calls import UTTERANCE, greeted
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample at a /metrics URL: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.5)


async def test_a_call_is_counted_by_the_agent(native_stack: ProcessStack, standin: GeminiLiveStandin) -> None:
    url = f"http://127.0.0.1:{native_stack.env['AGENT_METRICS_PORT']}/metrics"
    store = redis.Redis.from_url(native_stack.env["REDIS_URL"], decode_responses=True)
    day_before = store.hgetall(budget.day_key(time.time()))
    before = scrape(url)
    started = time.monotonic()
    async with Caller(native_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        assert sample(scrape(url), "voice_agent_calls_active") == sample(before, "voice_agent_calls_active") + 1
        spoke_until = await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
        await caller.wait_until(lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, 60,
                                "an answer")
        heard_after_s = caller.agent_audio.first_audible_after(spoke_until + 0.3) - spoke_until
        wait_for(lambda: sample(scrape(url), "voice_agent_turn_response_seconds_count")
                 > sample(before, "voice_agent_turn_response_seconds_count"), 30, "turn counted")
    wait_for(lambda: sample(scrape(url), "voice_agent_calls_active") == sample(before, "voice_agent_calls_active"),
             60, "call counted as ended")
    after = scrape(url)

    def delta(metric: str, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before, metric, **labels)

    assert delta("voice_agent_calls_total", kind="web") == 1
    assert delta("voice_agent_call_duration_seconds_count") == 1
    assert delta("voice_agent_model_connects_total", kind="first") == 1
    # One spoken turn (the greeting is not one): the agent's figure is within what the caller
    # measured (its last speech frame sent -> the answer heard), less the network legs.
    assert delta("voice_agent_turn_response_seconds_count") == 1
    response_s = delta("voice_agent_turn_response_seconds_sum")
    assert 0 < response_s < heard_after_s + 0.3, (response_s, heard_after_s)
    assert delta("voice_agent_tool_calls_total", name="get_current_time", outcome="ok") >= 1
    tokens_in = delta("voice_agent_model_tokens_total", direction="input", modality="audio")
    tokens_out = delta("voice_agent_model_tokens_total", direction="output", modality="audio")
    assert tokens_in > 0 and tokens_out > 0
    assert delta("voice_agent_model_cost_usd_total") == pytest.approx(
        (tokens_in * 3.00 + tokens_out * 12.00 + delta("voice_agent_model_tokens_total", direction="input", modality="text")
         * 0.50 + delta("voice_agent_model_tokens_total", direction="output", modality="text") * 2.00) / 1e6)
    # The budgets' totals in Redis (voice_calls.budget): the same cost, the call and its length.
    day = store.hgetall(budget.day_key(time.time()))
    assert budget.total(day, "cost_usd") - budget.total(day_before, "cost_usd") == pytest.approx(
        delta("voice_agent_model_cost_usd_total"))
    assert budget.total(day, "calls") - budget.total(day_before, "calls") == 1
    assert budget.total(day, "call_seconds") - budget.total(day_before, "call_seconds") == pytest.approx(
        delta("voice_agent_call_duration_seconds_sum"), abs=0.01)
    identity = store.hgetall(budget.identity_day_key(caller.identity, time.time()))
    assert budget.total(identity, "calls") == 1
    # livekit-agents' own metrics come through the multiprocess collector too.
    assert any(name.startswith("lk_agents_") for name, _ in after)


def prometheus_api(port: int, path: str, **query: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_every_service(native_stack: ProcessStack, tmp_path: Path, log_dir: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(monitoring.prometheus_config(native_stack.env, scrape_interval_s=1), encoding="utf-8")
    port = free_port()
    log = (log_dir / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        expected = {t for targets in monitoring.scrape_targets(native_stack.env).values() for t in targets}
        assert {"livekit", "token-server", "agent"} <= set(monitoring.scrape_targets(native_stack.env))

        def all_up() -> bool:
            try:
                targets = prometheus_api(port, "targets")["activeTargets"]
            except OSError:
                return False
            return {t["labels"]["instance"] for t in targets if t["health"] == "up"} == expected

        wait_for(all_up, 90, f"every target up ({sorted(expected)})")
        for job, metric in (("livekit", "go_goroutines"), ("token-server", "token_server_tokens_issued_total"),
                            ("agent", "voice_agent_calls_active")):
            found = prometheus_api(port, "query", query=f'{metric}{{job="{job}"}}')["result"]
            assert found, f"{metric} from {job}"
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        log.close()
