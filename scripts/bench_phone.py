"""Benchmark: the phone leg. RTP speech into livekit-sip -> the first RTP agent audio back.

Starts the native stack with livekit-sip (the harness of tests/e2e/test_phone.py) against the
Gemini Live stand-in (no tool calls, no simulated model delay), then places `--calls` calls
with SIPp, each speaking `--turns` utterances (G.711 μ-law, 20 ms RTP packets) with room for
the reply after each. tcpdump records the RTP both ways. Per turn:

    added latency = first audible RTP packet from livekit-sip after the utterance
                    - the RTP packet that carried the utterance's last sample
                    - the stand-in's VAD silence window (the model's own end-of-turn wait)

which is the appliance's phone path both ways: RTP -> livekit-sip (G.711 decode, Opus) ->
SFU -> agent (16 kHz) -> model WebSocket, and back (24 kHz -> Opus -> SFU -> livekit-sip ->
G.711 RTP), plus jitter buffers. Answer -> greeting runs from the first RTP packet
livekit-sip sends (the call is up) to the first audible one.

Prints p50/p95/max for both, and one JSON line for machines. `./scripts/bench --phone`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "calls")]

from scripts.bench_latency import UTTERANCES  # noqa: E402
from scripts.bench_stats import figures, summary  # noqa: E402
from tests.audio import mulaw_encode, synthesize  # noqa: E402
from tests.e2e.harness import TRUNK_NUMBER, TRUNK_PASSWORD, TRUNK_USER, running_stack, telephony_overrides  # noqa: E402
from tests.e2e.sipp import PHONE_SAMPLE_RATE, PCMU, caller_scenario, first_audible, place_call  # noqa: E402
from tests.standins.gemini_live import GeminiLiveStandin, StandinConfig  # noqa: E402

#: Silence before the first utterance (the greeting plays), and after each (the reply plays), s.
LEAD_S = 7.0
GAP_S = 7.0


def caller_audio(path: Path, turns: int) -> list[int]:
    """Write the caller's μ-law file; returns the sample index just after each utterance."""
    parts = [np.zeros(int(LEAD_S * PHONE_SAMPLE_RATE), dtype=np.int16)]
    ends = []
    for index in range(turns):
        parts.append(synthesize(UTTERANCES[index % len(UTTERANCES)], PHONE_SAMPLE_RATE))
        ends.append(sum(len(p) for p in parts))
        parts.append(np.zeros(int(GAP_S * PHONE_SAMPLE_RATE), dtype=np.int16))
    path.write_bytes(mulaw_encode(np.concatenate(parts)))
    return ends


def one_call(sip_address: str, workdir: Path, turns: int, vad_window_s: float) -> tuple[float | None, list[float]]:
    """Place one call; returns (answer -> greeting s, [added latency s per turn])."""
    workdir.mkdir(parents=True)
    ends = caller_audio(workdir / "caller.ulaw", turns)
    talk_ms = int((LEAD_S + turns * (GAP_S + 2.5)) * 1000)
    call = place_call(workdir, caller_scenario(audio=workdir / "caller.ulaw", talk_ms=talk_ms, password=TRUNK_PASSWORD),
                      remote=sip_address, service=TRUNK_NUMBER, username=TRUNK_USER, password=TRUNK_PASSWORD)
    if call.run.returncode != 0:
        raise RuntimeError(f"the call failed: {call.run.errors[-2000:]}")
    received = [p for p in call.received if p.payload_type == PCMU]
    greeting = first_audible(call.packets, received[0].at) if received else None
    latencies = []
    for end in ends:
        try:
            spoke_until = call.sent_at(end - 1)
        except IndexError:
            break
        heard = first_audible(call.packets, spoke_until)
        if heard is not None:
            latencies.append(heard - spoke_until - vad_window_s)
    return (greeting - received[0].at if greeting is not None else None), latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls, one after another (default 3)")
    parser.add_argument("--turns", type=int, default=3, help="spoken turns per call (default 3)")
    args = parser.parse_args()
    if args.calls < 1 or args.turns < 1:
        parser.error("--calls and --turns must be at least 1")

    greetings: list[float] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-phone-") as tmp, \
            GeminiLiveStandin(StandinConfig(), cert_dir=Path(tmp, "certs")) as standin:
        with running_stack(standin.base_url, str(standin.ca_file), Path(tmp, "state"), Path(tmp, "logs"),
                           telephony_overrides()) as processes:
            address = f"127.0.0.1:{processes.env['SIP_PORT']}"
            for number in range(args.calls):
                greeting_s, turn_latencies = one_call(address, Path(tmp, f"call-{number}"), args.turns,
                                                      standin.config.vad_silence_ms / 1000)
                if greeting_s is not None:
                    greetings.append(greeting_s)
                latencies.extend(turn_latencies)
    if not latencies:
        print("bench: no turn was answered", file=sys.stderr)
        return 1
    print(summary("phone: added voice-to-voice latency", latencies))
    if greetings:
        print(summary("phone: answer -> first greeting audio", greetings))
    print(json.dumps({"phone_voice_to_voice_added_ms": figures(latencies),
                      "phone_answer_to_greeting_ms": figures(greetings) if greetings else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
