"""The Grafana dashboard in the repo (deploy/grafana/voice-appliance.json) queries only metrics
the agent and the token server really export, read from their own registries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry

from scripts.stack import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "voice-appliance.json"
#: Series Prometheus itself adds to every scrape.
PROMETHEUS_SERIES = {"up"}
#: The prefixes of the appliance's own metrics (agent/voice_agent/metrics.py, records.py;
#: token-server/token_server/metrics.py).
OWN = re.compile(r"\b(?:voice_agent|token_server)_[a-z0-9_]+\b")


def series_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: its identifiers outside grouping clauses,
    label matchers and ranges, other than function and aggregation names."""
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]", " ", expr)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare))


def series(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry's metrics expose (counters: `_total`; histograms:
    `_bucket`, `_sum`, `_count`), whether or not a sample was recorded yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))}


def exported() -> set[str]:
    """What the agent's worker and the token server serve at /metrics."""
    import token_server.metrics
    import voice_agent.metrics  # noqa: F401  (registers the agent's metrics)
    import voice_agent.records  # noqa: F401

    return series(REGISTRY) | series(token_server.metrics.init_app(Flask(__name__)).registry)


def expressions(panels: list[dict]) -> Iterator[str]:
    for panel in panels:
        yield from (target["expr"] for target in panel.get("targets", []))
        yield from expressions(panel.get("panels", []))


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = list(expressions(dashboard["panels"]))
    assert len(exprs) > 10
    known = exported() | PROMETHEUS_SERIES
    for expr in exprs:
        names = series_names(expr)
        assert names, f"{expr!r} queries no metric"
        assert names <= known, f"{expr!r} queries {sorted(names - known)}, which nothing exports"
        assert OWN.search(expr) or names <= PROMETHEUS_SERIES, expr
    queried = {n for expr in exprs for n in series_names(expr)}
    # The figures: calls, response time, model link, fillers, tools, tokens, cost, errors.
    for metric in ("voice_agent_calls_total", "voice_agent_calls_active", "voice_agent_turn_response_seconds_bucket",
                   "voice_agent_model_connects_total", "voice_agent_model_link_lost_total",
                   "voice_agent_fillers_total", "voice_agent_tool_calls_total", "voice_agent_model_tokens_total",
                   "voice_agent_model_cost_usd_total", "voice_agent_errors_total",
                   "token_server_requests_rejected_total"):
        assert metric in queried, f"the dashboard shows no {metric}"


def test_series_names_reads_promql() -> None:
    assert series_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="x"}[5m])))') == {"a_bucket"}
    assert series_names("sum(up) / count(up) + sum without (kind) (increase(b_total[$__rate_interval]))") == \
        {"up", "b_total"}


def test_the_dashboard_imports_with_a_prometheus_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert [i["pluginId"] for i in dashboard["__inputs"]] == ["prometheus"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
