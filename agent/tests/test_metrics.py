"""The agent's metrics: the price table, the per-turn response time, what a call counts.

Values are read back from prometheus_client's registry (this process, not multiprocess mode);
each test reads the change it makes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from livekit.agents import utils
from prometheus_client import REGISTRY
from voice_calls import pricing

from voice_agent import metrics
from voice_agent.resilience import ConnectFailure, FailureKind


def value(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_prices_default_to_the_published_table_and_take_overrides() -> None:
    assert pricing.parse_prices("") == pricing.DEFAULT_PRICES_USD_PER_MTOK
    prices = pricing.parse_prices("output_audio=10, input_text = 0.25")
    assert prices[("output", "audio")] == 10.0 and prices[("input", "text")] == 0.25
    assert prices[("input", "audio")] == pricing.DEFAULT_PRICES_USD_PER_MTOK[("input", "audio")]
    tokens = {("input", "audio"): 1_000_000, ("output", "audio"): 500_000}
    assert pricing.cost_usd(tokens, prices) == pytest.approx(3.00 + 5.00)


@pytest.mark.parametrize("spec, message", [
    ("input_video=1", "'input_video': expected one of"),
    ("output_audio=cheap", "output_audio: 'cheap' is not a price"),
    ("output_text=-1", "output_text: a price cannot be negative"),
])
def test_a_bad_price_table_is_refused_with_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pricing.parse_prices(spec)


def test_usage_without_a_modality_breakdown_counts_as_audio() -> None:
    from livekit.agents.metrics import RealtimeModelMetrics

    report = RealtimeModelMetrics(
        label="gemini", request_id="r1", timestamp=0, duration=1, ttft=-1, cancelled=False,
        input_tokens=120, output_tokens=75, total_tokens=195, tokens_per_second=75,
        input_token_details=RealtimeModelMetrics.InputTokenDetails(audio_tokens=0, text_tokens=20, image_tokens=0,
                                                                   cached_tokens=0),
        output_token_details=RealtimeModelMetrics.OutputTokenDetails(audio_tokens=75, text_tokens=0, image_tokens=0))
    assert metrics.usage_tokens(report) == {("input", "audio"): 100, ("input", "text"): 20,
                                            ("output", "audio"): 75, ("output", "text"): 0}


def chunk(level: int, samples: int = 320) -> bytes:
    """20 ms of 16 kHz PCM16 alternating +level/-level (RMS = level)."""
    return struct.pack(f"<{samples}h", *([level, -level] * (samples // 2)))


def test_turn_response_runs_from_the_last_loud_chunk_to_the_reply() -> None:
    now = [100.0]
    seen: list[float] = []
    timer = metrics.TurnTimer(seen.append, clock=lambda: now[0])
    timer.on_reply_started()  # the greeting: no caller speech yet, not a turn
    assert seen == []
    for level in (2000, 3000, 1500):
        timer.on_input_chunk(chunk(level))
        now[0] += 0.02
    last_loud = now[0] - 0.02
    for _ in range(40):  # 0.8 s of near silence (below SPEECH_RMS)
        timer.on_input_chunk(chunk(100))
        now[0] += 0.02
    now[0] += 0.1
    timer.on_reply_started()
    assert seen == [pytest.approx(now[0] - last_loud)]
    timer.on_reply_started()  # a second reply (the filler, then the answer) is the same turn
    assert len(seen) == 1


def test_a_call_counts_usage_cost_tools_and_the_model_link() -> None:
    call = metrics.CallMetrics("web", pricing.parse_prices(""))
    before = {
        "in_audio": value("voice_agent_model_tokens_total", direction="input", modality="audio"),
        "cost": value("voice_agent_model_cost_usd_total"),
        "calls": value("voice_agent_calls_total", kind="web"),
        "active": value("voice_agent_calls_active"),
        "reconnects": value("voice_agent_model_connects_total", kind="reconnect"),
        "gave_up": value("voice_agent_model_connect_failures_total", kind="quota", outcome="gave_up"),
        "tool": value("voice_agent_tool_calls_total", name="get_current_time", outcome="ok"),
    }
    call.call_started()
    assert value("voice_agent_calls_active") == before["active"] + 1
    call.usage({("input", "audio"): 2000, ("output", "audio"): 1000, ("input", "text"): 0, ("output", "text"): 0})
    assert value("voice_agent_model_tokens_total", direction="input", modality="audio") == before["in_audio"] + 2000
    assert value("voice_agent_model_cost_usd_total") == pytest.approx(before["cost"] + 2000 * 3 / 1e6 + 1000 * 12 / 1e6)
    call.on_model_connected(first=False, replayed_messages=3)
    call.on_model_connect_failed(ConnectFailure(FailureKind.QUOTA, True, "HTTP 429"), attempt=4, retry_in_s=None)
    assert value("voice_agent_model_connects_total", kind="reconnect") == before["reconnects"] + 1
    assert value("voice_agent_model_connect_failures_total", kind="quota", outcome="gave_up") == before["gave_up"] + 1

    session = utils.EventEmitter()
    call.watch(session)
    session.emit("function_tools_executed", SimpleNamespace(
        function_calls=[SimpleNamespace(name="get_current_time")], function_call_outputs=[SimpleNamespace(is_error=False)]))
    assert value("voice_agent_tool_calls_total", name="get_current_time", outcome="ok") == before["tool"] + 1

    asyncio.run(call.call_ended())
    assert value("voice_agent_calls_total", kind="web") == before["calls"] + 1
    assert value("voice_agent_calls_active") == before["active"]
    assert value("voice_agent_call_duration_seconds_count") >= 1


def test_each_turns_response_time_also_goes_to_the_call_record() -> None:
    seen: list[float] = []
    call = metrics.CallMetrics("web", pricing.parse_prices(""), on_response=seen.append)
    session = utils.EventEmitter()
    call.watch(session)
    before = value("voice_agent_turn_response_seconds_count")
    call.turns.on_input_chunk(chunk(3000))  # the caller speaks ...
    session.emit("agent_state_changed", SimpleNamespace(new_state="speaking"))  # ... the reply starts
    assert len(seen) == 1 and 0 <= seen[0] < 1
    assert value("voice_agent_turn_response_seconds_count") == before + 1


def test_a_worker_with_a_targets_folder_takes_the_next_free_port_and_names_it(tmp_path: Path) -> None:
    """Replicas sharing the host's network (compose): the first free port from the setting up,
    in a Prometheus file-based discovery file, and a dead worker's file gone; without the
    folder a taken port is an error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            metrics.serve("127.0.0.1", port)
        with socket.socket() as gone:  # a worker killed without deleting its file
            gone.bind(("127.0.0.1", 0))
            dead = metrics.target_file(tmp_path, gone.getsockname()[1])
        dead.write_text("[]")
        bound = metrics.serve("127.0.0.1", port, tmp_path)
    assert bound > port
    assert json.loads(metrics.target_file(tmp_path, bound).read_text()) == [{"targets": [f"127.0.0.1:{bound}"]}]
    with urllib.request.urlopen(f"http://127.0.0.1:{bound}/metrics", timeout=5) as response:
        assert b"voice_agent_calls_active" in response.read()
    assert [p.name for p in tmp_path.iterdir()] == [f"agent-{bound}.json"]
