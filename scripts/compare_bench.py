"""Before and after, side by side in one run: a benchmark run alternately in two checkouts.

    python scripts/compare_bench.py --before ../old-checkout --rounds 3 -- --calls 2 --turns 6

runs `scripts/bench_latency.py` (the arguments after `--`) in the `--before` checkout and in
this one, alternating (before, after, before, after, ...), so that both see the same noisy
machine; reads the JSON line each run prints last, and prints the median of each figure's
p50 and p95 over the rounds, before beside after. To measure old code with today's bench,
copy the bench's files into the old checkout first (its git worktree, uncommitted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(checkout: Path, script: str, args: list[str]) -> dict[str, dict[str, int]]:
    """One benchmark run in `checkout`; its figures (`{"ms": {name: {"p50", "p95", "n"}}}`)."""
    done = subprocess.run([sys.executable, script, *args], cwd=checkout, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"compare_bench: the run in {checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--script", default="scripts/bench_latency.py")
    parser.add_argument("bench_args", nargs="*", help="arguments for the benchmark (after --)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, dict[str, int]]]] = {"before": [], "after": []}
    for index in range(args.rounds):
        for label, checkout in (("before", args.before), ("after", ROOT)):
            print(f"round {index + 1}/{args.rounds}: {label} ({checkout})", file=sys.stderr, flush=True)
            runs[label].append(run(checkout, args.script, args.bench_args))
    names = [n for n in runs["after"][0] if all(n in r for rs in runs.values() for r in rs)]
    print(f"{'figure':<26} {'before p50':>10} {'after p50':>10} {'before p95':>11} {'after p95':>10}   "
          f"(median over {args.rounds} rounds, ms)")
    for name in names:
        cells = [statistics.median(r[name][q] for r in runs[label]) for q in ("p50", "p95")
                 for label in ("before", "after")]
        print(f"{name:<26} {cells[0]:>10.0f} {cells[1]:>10.0f} {cells[2]:>11.0f} {cells[3]:>10.0f}")
    print(json.dumps({label: rs for label, rs in runs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
