"""Benchmark: voice-to-voice latency the appliance adds, and time from join to the greeting.

Starts the real native stack (same harness as the end-to-end tests) against the Gemini
Live stand-in (no tool calls, no simulated model delay), then runs `--calls` calls of
`--turns` spoken turns each with a LiveKit Python SDK caller. Per turn:

    added latency = first audible agent frame at the caller - last speech frame sent by it
                    - the stand-in's VAD silence window (the model's own end-of-turn wait)

so what remains is the appliance's path both ways: caller -> SFU -> agent (Opus decode,
resample to 16 kHz) -> model WebSocket, and model audio (24 kHz) -> agent -> SFU -> caller,
plus jitter buffers. Join -> greeting is measured from the caller's connect returning to
the first audible agent frame (agent dispatch, job start, model connect, greeting).

Prints p50/p95/max for both, and one JSON line for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench_stats import figures, summary  # noqa: E402
from tests.audio import synthesize  # noqa: E402
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller  # noqa: E402
from tests.e2e.harness import ProcessStack, running_stack  # noqa: E402
from tests.standins.gemini_live import GeminiLiveStandin, StandinConfig  # noqa: E402

UTTERANCES = (
    "What is the weather like today?",
    "Tell me something interesting.",
    "How does this appliance work?",
    "Thank you, that is all.",
)




async def one_call(stack_: ProcessStack, standin: GeminiLiveStandin, turns: int) -> tuple[float, list[float]]:
    """Run one call; returns (join -> greeting s, [added voice-to-voice latency s per turn])."""
    latencies: list[float] = []
    async with Caller(stack_.token_url, name="Bench") as caller:
        await caller.wait_until(lambda: caller.agent_audio.first_audible_after(caller.joined_at), 30, "greeting")
        greeting_s = caller.agent_audio.first_audible_after(caller.joined_at) - caller.joined_at
        session_id = standin.sessions[-1].session_id
        vad_window_s = standin.sessions[-1].vad_silence_ms / 1000
        for index in range(turns):
            await wait_reply_done(standin, session_id)
            speech = synthesize(UTTERANCES[index % len(UTTERANCES)], MIC_SAMPLE_RATE)
            spoke_until = await caller.say(speech, standin.config.vad_threshold_dbfs)
            await caller.wait_until(
                lambda: caller.agent_audio.first_audible_after(spoke_until), 20, f"answer to turn {index + 1}"
            )
            heard_at = caller.agent_audio.first_audible_after(spoke_until)
            latencies.append(heard_at - spoke_until - vad_window_s)
        await wait_reply_done(standin, session_id)
    return greeting_s, latencies


async def wait_reply_done(standin: GeminiLiveStandin, session_id: str) -> None:
    """Wait until the stand-in has finished every reply of the session (turnComplete sent)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        session = next(s for s in standin.sessions if s.session_id == session_id)
        if session.turns and all(t.turn_complete_at or t.interrupted for t in session.turns):
            await asyncio.sleep(0.3)  # the tail of the audio drains from the jitter buffer
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the stand-in never completed its reply")




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5, help="calls, one after another (default 5)")
    parser.add_argument("--turns", type=int, default=4, help="spoken turns per call (default 4)")
    args = parser.parse_args()
    if args.calls < 1 or args.turns < 1:
        parser.error("--calls and --turns must be at least 1")

    greetings: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            GeminiLiveStandin(StandinConfig(), cert_dir=Path(tmp, "certs")) as standin:
        with running_stack(standin.base_url, str(standin.ca_file), Path(tmp, "state"), Path(tmp, "logs")) as processes:
            for _ in range(args.calls):
                greeting_s, turn_latencies = asyncio.run(one_call(processes, standin, args.turns))
                greetings.append(greeting_s)
                latencies.extend(turn_latencies)

    print(summary("added voice-to-voice latency", latencies))
    print(summary("join -> first greeting audio", greetings))
    print(json.dumps({"voice_to_voice_added_ms": figures(latencies), "join_to_greeting_ms": figures(greetings)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
