"""Benchmark: how long faults take to recover from, over the real native stack.

Starts its own stack (same harness as the end-to-end tests; the agent under supervisord,
as `./scripts/run` has it) and Gemini Live stand-in, then measures, per trial:

* model drop -> agent audio again: the stand-in closes the model connection (1011) while
  the agent is answering; the time from the close to the first audible frame, at the
  caller, of the answer given on the new connection (reconnect with the handle, replay of
  the unanswered turn, the answer, the media path to the caller);
* worker kill -> agent back: SIGKILL to the process group of the worker serving the call,
  mid-call; the time to the first audible frame of the new agent in the same room. With
  `--workers 2` (the default) another live worker takes the call: the watchdog sees the
  dead job's Redis connections gone, hands the call over, the other worker starts the job,
  connects the model and says the resume line. With one worker supervisord's restart of
  it comes first. The legs are printed too: killed -> handed over (the record's
  `redispatched` event), -> the new agent in the room, -> its voice heard.

Prints p50/p95/max for both, and one JSON line for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "token-server"), str(ROOT / "calls")]

from scripts.bench_stats import figures, summary  # noqa: E402
from tests.audio import synthesize  # noqa: E402
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller  # noqa: E402
from scripts import stack  # noqa: E402
from tests.e2e.harness import ProcessStack, running_stack, worker_info, worker_process  # noqa: E402
from tests.e2e.calls import greeted, load_record, wait_sessions, wait_worker_ready  # noqa: E402
from tests.standins.gemini_live import GeminiLiveStandin, StandinConfig  # noqa: E402

UTTERANCE = "Tell me something interesting about this appliance."


async def model_drop_trials(stack_: ProcessStack, standin: GeminiLiveStandin, trials: int) -> list[float]:
    """One call; per trial: speak, drop the model link as the answer starts, time the recovery."""
    results = []
    started = time.monotonic()
    async with Caller(stack_.token_url, name="Bench") as caller:
        await greeted(caller, standin, started)
        for _ in range(trials):
            current = standin.sessions[-1]
            answered_before = sum(1 for s in standin.sessions for t in s.turns if t.kind == "audio")
            await caller.say(synthesize(UTTERANCE, MIC_SAMPLE_RATE))
            sessions = await wait_sessions(
                standin, started,
                lambda ss: sum(1 for s in ss for t in s.turns if t.kind == "audio" and t.first_audio_at)
                > answered_before,
            )
            dropped_at = time.monotonic()
            standin.disconnect(current.session_id, code=1011)
            sessions = await wait_sessions(
                standin, dropped_at,
                lambda ss: ss and any(t.kind == "audio" and t.first_audio_at for t in ss[-1].turns),
            )
            answer_sent = next(t.first_audio_at for t in sessions[-1].turns if t.kind == "audio")
            await caller.wait_until(
                lambda: caller.agent_audio.first_audible_after(answer_sent) is not None, 20, "the answer"
            )
            results.append(caller.agent_audio.first_audible_after(answer_sent) - dropped_at)
            await wait_sessions(standin, dropped_at, lambda ss: all(t.turn_complete_at for t in ss[-1].turns), 40)
            await asyncio.sleep(1.0)
    return results


def serving_worker(stack_: ProcessStack) -> int:
    """The pid of the worker running the one live call (each worker's `GET /worker`)."""
    for index, ready_file in enumerate(stack.agent_ready_files(stack_.env)):
        if int(worker_info(ready_file).get("active_jobs", 0)) > 0:
            return worker_process(stack_.processes["agent"].pid, index)
    raise LookupError("no worker runs a job")


async def worker_kill_trials(
    stack_: ProcessStack, standin: GeminiLiveStandin, trials: int
) -> dict[str, list[float]]:
    """Per trial, one call: SIGKILL the worker serving it mid-call, time until a new agent is
    heard in the room (with several workers, the others are alive meanwhile). Returns each
    leg's durations (s): `handed_over`, `joined`, `heard`.

    A fresh call each time: a call is handed over at most AGENT_MAX_REDISPATCHES times.
    """
    legs: dict[str, list[float]] = {"handed_over": [], "joined": [], "heard": []}
    for _ in range(trials):
        await wait_worker_ready(stack_, None)
        started = time.monotonic()
        async with Caller(stack_.token_url, name="Bench") as caller:
            # (a busy machine may take minutes to start the job; that is not what is measured)
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 180, "the greeting")
            await greeted(caller, standin, started)
            room, old_agent = caller.room.name, caller.agent_identity()
            joined: list[float] = []
            caller.room.on("participant_connected", lambda _p: joined.append(time.monotonic()))
            pid = serving_worker(stack_)
            killed_at, killed_unix = time.monotonic(), time.time()
            os.killpg(pid, signal.SIGKILL)
            await caller.wait_until(
                lambda: caller.agent_identity() not in (None, old_agent)
                and caller.agent_audio.first_audible_after(killed_at + 0.5) is not None,
                90, "the new agent",
            )
            legs["heard"].append(caller.agent_audio.first_audible_after(killed_at + 0.5) - killed_at)
            legs["joined"].append(joined[-1] - killed_at if joined else float("nan"))
            handed = [e["at"] for e in load_record(stack_, room).get("events", []) if e.get("event") == "redispatched"]
            legs["handed_over"].append(handed[0] - killed_unix if handed else float("nan"))
            print(f"worker kill {len(legs['heard'])}: handed over after {legs['handed_over'][-1]:.1f} s, new agent "
                  f"in the room after {legs['joined'][-1]:.1f} s, heard after {legs['heard'][-1]:.1f} s", flush=True)
            stack_.wait_healthy(["agent"], 300)  # the killed worker, restarted by supervisord
            await asyncio.sleep(4.0)  # let the resume line finish
    return legs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=10, help="model drops (default 10)")
    parser.add_argument("--kills", type=int, default=5, help="worker kills, one call each (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="agent workers (AGENT_WORKERS, default 2)")
    args = parser.parse_args()
    if args.drops < 0 or args.kills < 1 or args.workers < 1:
        parser.error("--kills and --workers must be at least 1, --drops at least 0")
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp, \
            GeminiLiveStandin(StandinConfig(), cert_dir=Path(tmp, "certs")) as standin:
        with running_stack(standin.base_url, str(standin.ca_file), Path(tmp, "state"), Path(tmp, "logs"),
                           {"AGENT_WORKERS": str(args.workers)}, timeout_s=300) as processes:
            drops = asyncio.run(model_drop_trials(processes, standin, args.drops)) if args.drops else []
            kills = asyncio.run(worker_kill_trials(processes, standin, args.kills))
    if drops:
        print(summary("model drop -> agent audio again", drops))
    print(summary(f"worker kill -> agent back ({args.workers} workers)", kills["heard"]))
    for leg in ("handed_over", "joined"):
        values = [v for v in kills[leg] if v == v]  # NaN: the leg was not seen
        if values:
            print(summary(f"  worker kill -> {leg.replace('_', ' ')}", values))
    print(json.dumps({"workers": args.workers, "model_drop_to_audio_ms": figures(drops) if drops else None,
                      "worker_kill_to_agent_ms": figures(kills["heard"]),
                      "worker_kill_legs_ms": {leg: figures([v for v in kills[leg] if v == v])
                                              for leg in ("handed_over", "joined") if any(v == v for v in kills[leg])}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
