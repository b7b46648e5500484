"""Benchmark: where a voice turn's time goes, leg by leg, over the real native stack.

Starts the native stack (the end-to-end tests' harness) and a Gemini Live stand-in in this
process; the callers (the LiveKit Python SDK) run in a child process under group id
`CALLER_GID`, so that `--loss` can drop their packets alone. Every time below is
`time.monotonic()`, one clock for the caller, the stand-in and the stack on this machine.

1. The appliance's own path. The stand-in answers a turn at its first loud chunk (no
   end-of-speech wait), with a steady tone. Per turn:
     round trip       caller's first loud frame sent -> first audible agent frame heard
     caller -> model  first loud frame sent -> the stand-in receives the audio chunk it is in
     model            that chunk -> the stand-in sends the first reply audio
     model -> caller  first reply audio sent -> first audible frame heard
     SFU hop          the same speech, caller -> SFU -> a plain SDK listener (no agent)
     agent's share    a leg minus the SFU hop: what the agent adds each way
   plus typed (`lk.chat`) -> first audible reply, and join -> greeting.
2. `--loss P`: the round trip again with P of the callers' UDP packets dropped each way
   (iptables: the `statistic` match on the callers' group and the connections they marked);
   replies are checked for holes (see scripts/load_test.py's `has_gap`).
3. `--vad MS,MS`: the total voice-to-voice time a caller waits, from the last loud frame of
   speech to the first audible answer, with the model's own end-of-speech wait, for each
   `GEMINI_VAD_SILENCE_MS` side by side (the stand-in honours the setup's VAD settings).

Prints p50/p95 per figure and one JSON line for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "token-server"), str(ROOT / "calls")]

import numpy as np  # noqa: E402
from livekit import api, rtc  # noqa: E402

from scripts.bench_stats import figures, summary  # noqa: E402
from scripts.load_test import has_gap, reply_window  # noqa: E402
from tests.audio import rms_dbfs, synthesize  # noqa: E402
from tests.e2e.caller import AUDIBLE_DBFS, FRAME_MS, MIC_SAMPLE_RATE, Caller  # noqa: E402
from tests.e2e.harness import ProcessStack, running_stack  # noqa: E402
from tests.standins.gemini_live import GeminiLiveStandin, SessionRecord, StandinConfig  # noqa: E402

UTTERANCES = (
    "What is the weather like today?",
    "Tell me something interesting.",
    "How does this appliance work?",
    "Thank you, that is all.",
)
#: The callers' group id: the loss rules match it (and only it).
CALLER_GID = 4242
#: Connection mark of the callers' flows, so the SFU's packets to them can be dropped too.
CALLER_MARK = "0x4242"
#: A frame this loud counts as speech (dBFS); the stand-in's VAD threshold is -40.
SPEECH_DBFS = -35.0


# --- the caller side (child process) ---------------------------------------------------------


async def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        await asyncio.sleep(0.02)


async def _turns(caller: Caller, turns: int, typed: bool) -> list[dict[str, float | bool]]:
    """Speak (or type) `turns` turns; per turn the caller's timestamps and whether the reply had a hole."""
    audio = caller.agent_audio
    out: list[dict[str, float | bool]] = []
    await _wait(lambda: audio.first_audible_after(caller.joined_at), 30)
    await _wait(lambda: reply_window(audio.levels, caller.joined_at), 30)
    for index in range(turns):
        await asyncio.sleep(0.6)
        if typed:
            sent = time.monotonic()
            await caller.room.local_participant.send_text(UTTERANCES[index % len(UTTERANCES)], topic="lk.chat")
            first_loud = last_loud = sent
        else:
            last_loud = await caller.say(synthesize(UTTERANCES[index % len(UTTERANCES)], MIC_SAMPLE_RATE), SPEECH_DBFS)
            first_loud = caller.first_speech_sent_at
        await _wait(lambda: reply_window(audio.levels, first_loud), 30)
        first, last = reply_window(audio.levels, first_loud) or (0.0, 0.0)
        out.append({"first_loud": first_loud, "last_loud": last_loud, "heard": first,
                    "hole": has_gap(audio.levels, first, last, FRAME_MS / 1000)})
    return out


async def _sfu_hop(server_url: str, tokens: tuple[str, str], turns: int) -> list[float]:
    """One way through the SFU alone: speaker -> SFU -> listener (both plain SDK participants)."""
    heard: list[tuple[float, float]] = []
    listener = rtc.Room()

    def on_track(track: rtc.Track, *_: Any) -> None:
        async def listen() -> None:
            async for event in rtc.AudioStream(track, sample_rate=MIC_SAMPLE_RATE, num_channels=1):
                heard.append((time.monotonic(), rms_dbfs(np.frombuffer(event.frame.data, dtype=np.int16))))

        asyncio.ensure_future(listen())

    listener.on("track_subscribed", on_track)
    await listener.connect(server_url, tokens[1])
    speaker = Caller("", token={"server_url": server_url, "participant_token": tokens[0],
                                "participant_identity": "bench-speaker"}, queue_size_ms=0)
    hops = []
    async with speaker:
        await asyncio.sleep(1.0)
        for index in range(turns):
            await speaker.say(synthesize(UTTERANCES[index % len(UTTERANCES)], MIC_SAMPLE_RATE), SPEECH_DBFS)
            start = speaker.first_speech_sent_at
            await _wait(lambda: any(at > start and db > AUDIBLE_DBFS for at, db in heard), 10)
            hops.append(next(at for at, db in heard if at > start and db > AUDIBLE_DBFS) - start)
            await asyncio.sleep(0.5)
    await listener.disconnect()
    return hops


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "sfu":
        return {"hops": await _sfu_hop(spec["server_url"], tuple(spec["tokens"]), spec["turns"])}
    calls = []
    for _ in range(spec["calls"]):
        caller = Caller(spec["token_url"], name="Bench", queue_size_ms=0)
        started = time.monotonic()
        async with caller:
            turns = await _turns(caller, spec["turns"], spec["kind"] == "typed")
            greeting = caller.agent_audio.first_audible_after(caller.joined_at) - caller.joined_at
        calls.append({"started": started, "greeting_s": greeting, "turns": turns})
        await asyncio.sleep(1.0)  # the job ends before the next call
    return {"calls": calls}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the caller side in a child process under `CALLER_GID` (see `--loss`)."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        command = ["setpriv", f"--regid={CALLER_GID}", "--clear-groups", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the caller process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- packet loss ----------------------------------------------------------------------------


@contextlib.contextmanager
def packet_loss(probability: float) -> Iterator[None]:
    """Drop `probability` of the callers' UDP packets each way (iptables, root only).

    Marks the connections the callers' group opens; drops at random their outgoing packets,
    and the packets others (the SFU) send on those connections.

    Raises:
        RuntimeError: not root, or iptables refuses the rules (no owner/statistic match).
    """
    if os.geteuid() != 0 or not shutil.which("iptables"):
        raise RuntimeError("--loss needs root and iptables (Debian package iptables)")
    p = f"{probability:.4f}"
    rules = [
        ["-t", "mangle", "OUTPUT", "-m", "owner", "--gid-owner", str(CALLER_GID), "-j", "CONNMARK", "--set-mark", CALLER_MARK],
        ["-t", "filter", "OUTPUT", "-p", "udp", "-m", "owner", "--gid-owner", str(CALLER_GID),
         "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"],
        ["-t", "filter", "OUTPUT", "-p", "udp", "-m", "connmark", "--mark", CALLER_MARK, "-m", "owner", "!",
         "--gid-owner", str(CALLER_GID), "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"],
    ]
    added = []
    try:
        for table, chain, *rest in ([r[1], r[2], *r[3:]] for r in rules):
            subprocess.run(["iptables", "-t", table, "-A", chain, *rest], check=True, capture_output=True)
            added.append((table, chain, rest))
        yield
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"iptables refused a loss rule: {exc.stderr.decode().strip()}") from None
    finally:
        for table, chain, rest in reversed(added):
            subprocess.run(["iptables", "-t", table, "-D", chain, *rest], capture_output=True)


# --- the appliance side (this process) -------------------------------------------------------


def first_loud_chunk_at(session: SessionRecord, turn: Any) -> float:
    """When the stand-in received the chunk holding the turn's first loud audio."""
    offset = int(turn.speech_start_ms * 32)  # ms of 16 kHz PCM16 -> bytes
    return next(c.at for c in session.audio_chunks if c.offset + c.size > offset)


def voice_legs(standin: GeminiLiveStandin, after: float, caller: dict[str, Any]) -> dict[str, list[float]]:
    """Per turn: round trip and its legs (s), joining the caller's and the stand-in's timestamps."""
    legs: dict[str, list[float]] = {"round_trip": [], "caller_to_model": [], "model": [], "model_to_caller": []}
    sessions = [s for s in standin.sessions if s.connected_at >= after]
    turns = [(s, t) for s in sessions for t in s.turns if t.kind == "audio" and t.first_audio_at]
    mine = [t for call in caller["calls"] for t in call["turns"]]
    for (session, turn), seen in zip(turns, mine, strict=False):
        arrived = first_loud_chunk_at(session, turn)
        legs["round_trip"].append(seen["heard"] - seen["first_loud"])
        legs["caller_to_model"].append(arrived - seen["first_loud"])
        legs["model"].append(turn.first_audio_at - arrived)
        legs["model_to_caller"].append(seen["heard"] - turn.first_audio_at)
    return legs


def sfu_hop(stack: ProcessStack, turns: int) -> list[float]:
    """Caller -> SFU -> listener, one way, in a room of its own (no agent is dispatched)."""
    def token(identity: str) -> str:
        return (api.AccessToken(stack.env["LIVEKIT_API_KEY"], stack.env["LIVEKIT_API_SECRET"])
                .with_identity(identity)
                .with_grants(api.VideoGrants(room_join=True, room="bench-sfu-hop")).to_jwt())

    server_url = f"ws://127.0.0.1:{stack.env['LIVEKIT_PORT']}"
    return run_child({"kind": "sfu", "server_url": server_url, "turns": turns,
                      "tokens": [token("bench-speaker"), token("bench-listener")]})["hops"]


def appliance_path(stack: ProcessStack, standin: GeminiLiveStandin, calls: int, turns: int,
                   loss: float) -> dict[str, Any]:
    """Section 1 (and 2 with `loss`): legs, typed -> audio, greeting, SFU hop."""
    out: dict[str, Any] = {}
    started = time.monotonic()
    voice = run_child({"kind": "voice", "token_url": stack.token_url, "calls": calls, "turns": turns})
    out.update(voice_legs(standin, started, voice))
    out["greeting"] = [c["greeting_s"] for c in voice["calls"]]
    typed = run_child({"kind": "typed", "token_url": stack.token_url, "calls": 1, "turns": turns})
    out["typed"] = [t["heard"] - t["first_loud"] for c in typed["calls"] for t in c["turns"]]
    out["sfu_hop"] = sfu_hop(stack, turns)
    hop = sorted(out["sfu_hop"])[len(out["sfu_hop"]) // 2]
    out["agent_in"] = [v - hop for v in out["caller_to_model"]]
    out["agent_out"] = [v - hop for v in out["model_to_caller"]]
    if loss:
        with packet_loss(loss):
            lossy = run_child({"kind": "voice", "token_url": stack.token_url, "calls": calls, "turns": turns})
        out["lossy_round_trip"] = [t["heard"] - t["first_loud"] for c in lossy["calls"] for t in c["turns"]]
        out["lossy_holes"] = sum(t["hole"] for c in lossy["calls"] for t in c["turns"])
        out["lossy_replies"] = sum(len(c["turns"]) for c in lossy["calls"])
        out["clean_holes"] = sum(t["hole"] for c in voice["calls"] for t in c["turns"])
    return out


def vad_total(stack: ProcessStack, standin: GeminiLiveStandin, calls: int, turns: int) -> list[float]:
    """Section 3: last loud frame -> first audible answer, with the model's end-of-speech wait."""
    voice = run_child({"kind": "voice", "token_url": stack.token_url, "calls": calls, "turns": turns})
    return [t["heard"] - t["last_loud"] for c in voice["calls"] for t in c["turns"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per measurement, one after another (default 3)")
    parser.add_argument("--turns", type=int, default=6, help="turns per call (default 6)")
    parser.add_argument("--loss", type=float, default=0.0, help="also measure with this share of packets lost each way")
    parser.add_argument("--vad", default="", help="GEMINI_VAD_SILENCE_MS values to compare, e.g. 500,800")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra stack setting")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(json.loads(args.child)))))
        return 0
    if args.calls < 1 or args.turns < 1 or not 0 <= args.loss < 1:
        parser.error("--calls and --turns must be at least 1, --loss in [0, 1)")
    extra = dict(item.split("=", 1) for item in args.env)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        instant = StandinConfig(answer_at_speech_start=True, reply_audio="tone")
        with GeminiLiveStandin(instant, cert_dir=Path(tmp, "certs")) as standin, \
                running_stack(standin.base_url, str(standin.ca_file), Path(tmp, "state"), Path(tmp, "logs"),
                              extra=extra) as stack:
            results["path"] = appliance_path(stack, standin, args.calls, args.turns, args.loss)
        for silence in [int(v) for v in args.vad.split(",") if v.strip()]:
            with GeminiLiveStandin(StandinConfig(reply_audio="tone"), cert_dir=Path(tmp, "certs")) as standin, \
                    running_stack(standin.base_url, str(standin.ca_file), Path(tmp, f"state-{silence}"),
                                  Path(tmp, f"logs-{silence}"),
                                  extra={**extra, "GEMINI_VAD_SILENCE_MS": str(silence)}) as stack:
                results[f"vad_{silence}"] = vad_total(stack, standin, args.calls, args.turns)

    path = results["path"]
    print("The appliance's own path (the stand-in answers at the first loud chunk):")
    for key, label in (("round_trip", "voice round trip"), ("caller_to_model", "  caller -> model"),
                       ("model", "  model (stand-in)"), ("model_to_caller", "  model -> caller"),
                       ("sfu_hop", "  SFU hop alone (one way)"), ("agent_in", "  agent's share, in"),
                       ("agent_out", "  agent's share, out"), ("typed", "typed (lk.chat) -> audio"),
                       ("greeting", "join -> greeting")):
        print(summary(label, path[key]))
    if args.loss:
        print(f"\nWith {args.loss:.0%} of the caller's packets lost each way:")
        print(summary("voice round trip, clean", path["round_trip"]))
        print(summary(f"voice round trip, {args.loss:.0%} loss", path["lossy_round_trip"]))
        print(f"replies with holes: {path['clean_holes']} clean, "
              f"{path['lossy_holes']} of {path['lossy_replies']} with loss")
    vads = {k: v for k, v in results.items() if k.startswith("vad_")}
    if vads:
        print("\nWhat a caller waits, from the end of speech to the answer, with the model's VAD:")
        for key, values in vads.items():
            print(summary(f"GEMINI_VAD_SILENCE_MS={key[4:]}", values))
    machine = {k: figures(v) for k, v in path.items() if isinstance(v, list) and v}
    machine.update({k: figures(v) for k, v in vads.items()})
    machine.update({k: v for k, v in path.items() if isinstance(v, int)})
    print(json.dumps({"ms": machine, "settings": extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
