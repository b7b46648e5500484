"""Load test with the agent in the loop: many callers at once, like `lk load-test`, but each
caller talks to the agent and measures what a person would hear.

Starts the appliance's native stack (the end-to-end tests' harness) against a Gemini Live
stand-in in its own process that answers at once (at the first loud chunk of each turn, with
a steady tone, so what remains of a round trip is the appliance's own path and a hole in a
reply is one the appliance made). Or, with `--token-url`, loads an appliance that is already
running (then only the callers' figures are measured).

For each step of `--ramp` (e.g. 1,4,8,16), N callers (the LiveKit Python SDK, all in this
process) ask the standard token endpoint for a token, join, wait for the greeting, then take
turns of speech and silence for `--hold` seconds, and hang up. Per step it reports:

* served / refused (with the error code) / left silent (token 201 but no greeting within
  `--greeting-timeout` s);
* join -> greeting p50 and max: from `room.connect()` returning to the first audible frame;
* turn round trip p50 / p95: the caller's first loud frame of a turn -> the first audible
  agent frame back;
* replies with gaps: replies in which the level fell 12 dB under the reply's median for
  20 ms or more (the tone has no pauses of its own; frames are 20 ms, so one quiet frame is one);
* CPU (% of one core) and PSS (MiB) of the agent worker (all its processes), livekit-server,
  the rest of the appliance (Redis, token server, front door), the load generator itself and
  the stand-in, measured while every call of the step is up; and per call for the agent.

Writes `results.json`, `results.csv` and `load.png` (latency and CPU against concurrent
calls) under `--out`, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "calls")]

from scripts.bench_stats import percentile  # noqa: E402
from scripts.proc_usage import Selector, TreeUsage, UsageSampler, trees  # noqa: E402
from tests.audio import synthesize  # noqa: E402
from tests.e2e.caller import AUDIBLE_DBFS, MIC_SAMPLE_RATE, Caller, TokenRefused  # noqa: E402
from tests.e2e.harness import ProcessStack, running_stack  # noqa: E402

UTTERANCES = ("What is the weather like today?", "Tell me something interesting.", "How does this work?")
#: A reply has ended after this long without an audible frame (s).
REPLY_END_SILENCE_S = 0.5
#: A hole: the level this far under the reply's median (dB) for at least `GAP_MIN_S`.
GAP_DROP_DB, GAP_MIN_S = 12.0, 0.02
#: The callers' own audio, made cheap so that the generator leaves the CPU to the appliance:
#: 20 ms frames each way (half the work of WebRTC's 10 ms) through a 40 ms queue (up to a
#: frame of caller-side delay in the round trip), the agent decoded at its own 24 kHz.
CALLER_FRAME_MS, CALLER_QUEUE_MS, LISTEN_RATE = 20, 40, 24_000
#: Process trees measured, by name.
TREES = ("agent", "livekit", "appliance-other", "load-generator", "model-stand-in")


@dataclass
class CallResult:
    """One caller's call."""

    token_status: int = 0
    refused_code: str | None = None
    greeting_s: float | None = None
    round_trips_s: list[float] = field(default_factory=list)
    replies: int = 0
    gappy_replies: int = 0
    error: str | None = None

    @property
    def served(self) -> bool:
        return self.greeting_s is not None

    @property
    def silent(self) -> bool:
        """Got a token and joined, but no agent was ever heard."""
        return self.token_status == 201 and self.greeting_s is None


def reply_window(levels: list[tuple[float, float]], start: float) -> tuple[float, float] | None:
    """(first, last) audible frame times of the reply that begins after `start`, once it has
    ended (`REPLY_END_SILENCE_S` without sound); None while it is still playing."""
    first = last = None
    for at, db in levels:
        if at <= start:
            continue
        if db > AUDIBLE_DBFS:
            if first is None:
                first = at
            last = at
        elif last is not None and at - last >= REPLY_END_SILENCE_S:
            return first, last
    return None


def has_gap(levels: list[tuple[float, float]], first: float, last: float, frame_s: float) -> bool:
    """Whether the reply between `first` and `last` has a hole: `GAP_MIN_S` or more of frames
    (each `frame_s` long) `GAP_DROP_DB` under the reply's median level."""
    inside = [db for at, db in levels if first <= at <= last]
    if len(inside) < 3:
        return False
    floor = statistics.median(inside) - GAP_DROP_DB
    quiet = 0
    for db in inside:
        quiet = quiet + 1 if db < floor else 0
        if quiet * frame_s >= GAP_MIN_S - 1e-9:
            return True
    return False


async def wait_for(predicate: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def one_call(token_url: str, name: str, greeting_timeout_s: float, up: asyncio.Event,
                   hang_up: asyncio.Event, greeted: Callable[[], None]) -> CallResult:
    """One caller from token to hang-up (see the module docstring)."""
    result = CallResult()
    rng = random.Random(name)
    try:
        async with Caller(token_url, name=name, mic_frame_ms=CALLER_FRAME_MS, queue_size_ms=CALLER_QUEUE_MS,
                          listen_rate=LISTEN_RATE, listen_frame_ms=CALLER_FRAME_MS) as caller:
            result.token_status = caller.token_status
            audio = caller.agent_audio
            heard = await wait_for(lambda: audio.first_audible_after(caller.joined_at), greeting_timeout_s)
            greeted()
            if not heard:
                return result
            result.greeting_s = audio.first_audible_after(caller.joined_at) - caller.joined_at
            await wait_for(lambda: reply_window(audio.levels, caller.joined_at), 30)
            await up.wait()
            turn = 0
            while not hang_up.is_set():
                speech = synthesize(UTTERANCES[turn % len(UTTERANCES)], MIC_SAMPLE_RATE)
                turn += 1
                await caller.say(speech, speech_dbfs=-35.0)
                spoke_at = caller.first_speech_sent_at
                if not await wait_for(lambda: reply_window(audio.levels, spoke_at), 20):
                    result.error = "a reply never came or never ended"
                    break
                first, last = reply_window(audio.levels, spoke_at) or (0.0, 0.0)
                result.round_trips_s.append(first - spoke_at)
                result.replies += 1
                result.gappy_replies += has_gap(audio.levels, first, last, CALLER_FRAME_MS / 1000)
                await asyncio.sleep(rng.uniform(0.5, 1.5))
    except TokenRefused as refused:
        result.token_status, result.refused_code = refused.status, refused.code
        greeted()
    except Exception as exc:  # noqa: BLE001 - one caller's failure is a figure, not the end of the test
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        greeted()
    return result


async def run_step(token_url: str, callers: int, hold_s: float, greeting_timeout_s: float,
                   sampler: UsageSampler | None) -> tuple[list[CallResult], dict[str, TreeUsage]]:
    """`callers` calls at once; usage is sampled while all of them are up."""
    up, hang_up = asyncio.Event(), asyncio.Event()
    settled = 0

    def greeted() -> None:
        nonlocal settled
        settled += 1

    tasks = []
    for index in range(callers):
        tasks.append(asyncio.create_task(
            one_call(token_url, f"Load {callers}-{index}", greeting_timeout_s, up, hang_up, greeted)))
        await asyncio.sleep(0.05)  # arrivals 50 ms apart, not in one instant
    await wait_for(lambda: settled >= callers, greeting_timeout_s + 30)
    usage: dict[str, TreeUsage] = {}
    up.set()
    await asyncio.sleep(1.0)  # the first turns start
    if sampler is not None:
        sampler.start()
    await asyncio.sleep(hold_s)
    if sampler is not None:
        usage = sampler.stop()
    hang_up.set()
    return list(await asyncio.gather(*tasks)), usage


def summarize(callers: int, results: list[CallResult], usage: dict[str, TreeUsage]) -> dict[str, object]:
    """One row of the table."""
    greetings = [r.greeting_s for r in results if r.greeting_s is not None]
    trips = [t for r in results for t in r.round_trips_s]
    refused: dict[str, int] = {}
    for r in results:
        if r.refused_code:
            refused[r.refused_code] = refused.get(r.refused_code, 0) + 1
    served = sum(r.served for r in results)
    row: dict[str, object] = {
        "callers": callers,
        "served": served,
        "refused": refused,
        "silent": sum(r.silent for r in results),
        "errors": sorted({r.error for r in results if r.error}),
        "greeting_p50_s": round(statistics.median(greetings), 3) if greetings else None,
        "greeting_max_s": round(max(greetings), 3) if greetings else None,
        "turns": len(trips),
        "round_trip_p50_ms": round(percentile(trips, 50) * 1000) if trips else None,
        "round_trip_p95_ms": round(percentile(trips, 95) * 1000) if trips else None,
        "replies": sum(r.replies for r in results),
        "replies_with_gaps": sum(r.gappy_replies for r in results),
    }
    for name in TREES:
        if name in usage:
            row[f"{name}_cpu_pct"] = round(usage[name].cpu_percent, 1)
            row[f"{name}_pss_mib"] = round(usage[name].pss_mib_mean, 1)
    if "agent" in usage and served:
        row["agent_cpu_pct_per_call"] = round(usage["agent"].cpu_percent / served, 1)
        row["agent_pss_mib_per_call"] = round(usage["agent"].pss_mib_mean / served, 1)
    return row


def table(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table (what the README's Capacity section shows)."""
    head = ("| callers | served | refused | left silent | join -> greeting p50 / max | turn round trip p50 / p95 "
            "| replies with gaps | agent CPU per call | agent PSS per call | livekit-server CPU | load generator CPU |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]

    def fmt(value: object, unit: str = "") -> str:
        return "-" if value is None else f"{value}{unit}"

    for r in rows:
        refused = ", ".join(f"{n} {code}" for code, n in r["refused"].items()) or "0"  # type: ignore[union-attr]
        lines.append(
            f"| {r['callers']} | {r['served']} | {refused} | {r['silent']} "
            f"| {fmt(r['greeting_p50_s'], ' s')} / {fmt(r['greeting_max_s'], ' s')} "
            f"| {fmt(r['round_trip_p50_ms'])} / {fmt(r['round_trip_p95_ms'], ' ms')} "
            f"| {r['replies_with_gaps']} of {r['replies']} "
            f"| {fmt(r.get('agent_cpu_pct_per_call'), ' %')} | {fmt(r.get('agent_pss_mib_per_call'), ' MiB')} "
            f"| {fmt(r.get('livekit_cpu_pct'), ' %')} | {fmt(r.get('load-generator_cpu_pct'), ' %')} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    """Latency and CPU against concurrent calls, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = [r["callers"] for r in rows]
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("round_trip_p50_ms", "turn round trip p50"), ("round_trip_p95_ms", "turn round trip p95")):
        lat.plot(calls, [r[key] for r in rows], marker="o", label=label)
    lat.plot(calls, [(r["greeting_p50_s"] or 0) * 1000 for r in rows], marker="s", label="join -> greeting p50")
    lat.axhline(300, color="grey", linestyle=":", label="300 ms")
    lat.set_xlabel("concurrent calls")
    lat.set_ylabel("ms")
    lat.set_title("What a caller waits for")
    lat.legend(fontsize=8)
    for name in TREES:
        key = f"{name}_cpu_pct"
        if any(key in r for r in rows):
            cpu.plot(calls, [r.get(key, 0) for r in rows], marker="o", label=name)
    cpu.axhline(100 * (os.cpu_count() or 1), color="grey", linestyle=":", label="all cores")
    cpu.set_xlabel("concurrent calls")
    cpu.set_ylabel("% of one core")
    cpu.set_title("Where the CPU goes")
    cpu.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def start_standin(cert_dir: Path, log: Path) -> tuple[subprocess.Popen[str], str, str]:
    """The Gemini Live stand-in in its own process: (process, base URL, CA file)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.gemini_live", "--port", "0", "--cert-dir", str(cert_dir),
         "--answer-at-speech-start", "--reply-audio", "tone", "--log-level", "WARNING"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,  # noqa: SIM115
    )
    values: dict[str, str] = {}
    assert process.stdout is not None
    while len(values) < 2:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stand-in did not start; see {log}")
        if "=" in line:
            key, value = line.strip().split("=", 1)
            values[key] = value
    return process, values["base_url"], values["ca_file"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ramp", default="1,4,8,16", help="concurrent calls per step, comma-separated")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds every step's calls talk (default 30)")
    parser.add_argument("--greeting-timeout", type=float, default=15.0,
                        help="a caller not greeted within this long was left silent (s)")
    parser.add_argument("--max-calls", type=int, default=0,
                        help="AGENT_MAX_CALLS of the stack (default: the largest step, so nothing is refused)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra setting for the stack (repeatable), e.g. AGENT_JOB_EXECUTOR=thread")
    parser.add_argument("--token-url", help="load an appliance already running at this token endpoint instead")
    parser.add_argument("--out", type=Path, default=Path("artifacts/load-test"), help="where results go")
    args = parser.parse_args()
    try:
        ramp = [int(n) for n in args.ramp.split(",") if n.strip()]
        extra = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        parser.error("--ramp takes numbers (1,4,8) and --env takes KEY=VALUE")
    if not ramp or min(ramp) < 1:
        parser.error("--ramp needs at least one step of 1 call or more")
    args.out.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, object]] = []
    machine = f"{platform.node()}: {os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.machine()}"
    settings = {"AGENT_MAX_CALLS": str(args.max_calls or max(ramp)),
                "TOKEN_RATE_LIMIT_PER_ADDRESS": "100000/minute", **extra}

    def run(token_url: str, sampler: UsageSampler | None) -> None:
        for callers in ramp:
            results, usage = asyncio.run(run_step(token_url, callers, args.hold, args.greeting_timeout, sampler))
            rows.append(summarize(callers, results, usage))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            time.sleep(3)  # the calls' jobs end before the next step

    if args.token_url:
        run(args.token_url, None)
    else:
        with tempfile.TemporaryDirectory(prefix="load-") as tmp:
            standin, base_url, ca_file = start_standin(Path(tmp, "certs"), args.out / "standin.log")
            try:
                with running_stack(base_url, ca_file, Path(tmp, "state"), args.out / "logs", extra=settings) as stack:
                    run(stack.token_url, UsageSampler(_groups(stack, standin.pid)))
            finally:
                standin.terminate()
                standin.wait(10)

    result = {"machine": machine, "settings": settings, "ramp": ramp, "hold_s": args.hold, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    with open(args.out / "results.csv", "w", newline="") as out:
        keys = sorted({k for r in rows for k in r})
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows)
    plot(rows, args.out / "load.png", f"{machine}; {', '.join(f'{k}={v}' for k, v in extra.items()) or 'defaults'}")
    print(f"\nMeasured on {machine}\n")
    print(table(rows))
    print(f"\n{args.out}/results.json, results.csv, load.png")
    return 0


def _groups(stack: ProcessStack, standin_pid: int) -> dict[str, Selector]:
    """The process groups to measure: each service's processes below its Procfile shell."""

    def leader(name: str) -> Callable[[], int | None]:
        return lambda: stack.processes[name].pid if name in stack.processes else None

    return {
        "agent": trees(leader("agent")),
        "livekit": trees(leader("livekit")),
        "appliance-other": trees(leader("redis"), leader("token-server"), leader("web")),
        "load-generator": lambda: {os.getpid()},
        "model-stand-in": trees(lambda: standin_pid),
    }


def _memory_gib() -> float:
    match = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return int(match.group(1)) / 1024 / 1024 if match else 0.0


if __name__ == "__main__":
    sys.exit(main())
