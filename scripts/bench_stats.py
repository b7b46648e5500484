"""Figures for the benchmarks: percentiles of durations, printed for people and as JSON."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation (`statistics.quantiles`, inclusive)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary(name: str, values_s: list[float]) -> str:
    """One line: count, p50, p95 and max of durations given in seconds, shown in ms."""
    ms = [v * 1000 for v in values_s]
    return (f"{name:<34} n={len(ms):<3} p50={percentile(ms, 50):7.0f} ms  p95={percentile(ms, 95):7.0f} ms"
            f"  max={max(ms):7.0f} ms")


def figures(values_s: list[float]) -> dict[str, int]:
    """`{"p50": ms, "p95": ms, "n": count}` of durations given in seconds."""
    return {"p50": round(percentile(values_s, 50) * 1000), "p95": round(percentile(values_s, 95) * 1000),
            "n": len(values_s)}
