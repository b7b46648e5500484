"""The agent worker's Prometheus metrics, served at `http://AGENT_METRICS_HOST:port/metrics`.

Each call runs in a process of its own (livekit-agents' process executor), so the metrics
use prometheus_client's multiprocess mode: every process writes its values to files under
`PROMETHEUS_MULTIPROC_DIR` (set by `__main__` before anything imports prometheus_client; one
directory per worker, emptied by livekit-agents when the worker starts), and the worker's
HTTP server (`serve`) sums them. livekit-agents' own `lk_agents_*` metrics come along.

Metrics (all prefixed `voice_agent_`):

    calls_total{kind}                      calls a caller joined (kind: web | phone)
    calls_active                           calls in progress (sum over the call processes)
    call_duration_seconds                  histogram, caller joined -> call ended
    turn_response_seconds                  histogram: the end of the caller's speech (the last
                                           chunk sent to the model louder than
                                           `SPEECH_DBFS`) -> the reply's first audio played
    model_connects_total{kind}             model link handshakes that succeeded (first | reconnect)
    model_link_lost_total{reason}          connections lost (connection dropped | goAway)
    model_connect_failures_total{kind,outcome}  failed handshakes (kind: resilience.FailureKind;
                                           outcome: retrying | gave_up)
    fillers_total                          "One moment, please." clips played
    tool_calls_total{name,outcome}         tool calls (outcome: ok | error)
    model_tokens_total{direction,modality} tokens from the model's usageMetadata
    model_cost_usd_total                   those tokens at the price table (voice_calls.pricing)
    errors_total{kind}                     session errors by class, model_unavailable
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from voice_calls import pricing

from .resilience import ConnectFailure

logger = logging.getLogger("voice_agent.metrics")

#: A chunk of the caller's audio louder than this is speech (dBFS; the RMS of PCM16 samples).
SPEECH_DBFS = -40.0
SPEECH_RMS = 32768 * 10 ** (SPEECH_DBFS / 20)

CALLS = Counter("voice_agent_calls", "Calls a caller joined, by kind (web, phone).", ["kind"])
CALLS_ACTIVE = Gauge("voice_agent_calls_active", "Calls in progress.", multiprocess_mode="livesum")
CALL_SECONDS = Histogram("voice_agent_call_duration_seconds", "Call length, caller joined to call ended (s).",
                         buckets=(15, 30, 60, 120, 300, 600, 900, 1800, 3600))
TURN_RESPONSE = Histogram(
    "voice_agent_turn_response_seconds",
    "End of the caller's speech to the reply's first audio played, per turn (s).",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0))
MODEL_CONNECTS = Counter("voice_agent_model_connects", "Model link handshakes that succeeded.", ["kind"])
MODEL_LINK_LOST = Counter("voice_agent_model_link_lost", "Model connections lost or replaced.", ["reason"])
MODEL_CONNECT_FAILURES = Counter("voice_agent_model_connect_failures", "Failed model handshakes.",
                                 ["kind", "outcome"])
FILLERS = Counter("voice_agent_fillers", "Filler clips played while the model was away.")
TOOL_CALLS = Counter("voice_agent_tool_calls", "Tool calls, by tool and outcome (ok, error).", ["name", "outcome"])
MODEL_TOKENS = Counter("voice_agent_model_tokens", "Model tokens (usageMetadata), by direction and modality.",
                       ["direction", "modality"])
MODEL_COST = Counter("voice_agent_model_cost_usd", "Estimated model cost at the price table (USD).")
ERRORS = Counter("voice_agent_errors", "Errors, by kind.", ["kind"])


#: With a targets folder, ports tried from the configured one upward before giving up.
PORT_SEARCH = 64


def serve(host: str, port: int, targets_dir: Path | None = None) -> int:
    """Serve every process's metrics on `host:port` (a daemon thread of this process); the
    port bound.

    With `targets_dir`, the first free port from `port` upward (at most `PORT_SEARCH`), named
    in `targets_dir/agent-<port>.json`, a Prometheus file-based discovery file
    (`[{"targets": ["host:port"]}]`; the worker deletes it at exit). Files of workers that
    died without deleting theirs (nothing listens on their port any more) go first.

    Raises:
        OSError: the port (every port tried) cannot be bound, or the file not written.
    """
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for candidate in range(port, port + (PORT_SEARCH if targets_dir is not None else 1)):
        try:
            start_http_server(candidate, addr=host, registry=registry)
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or targets_dir is None or candidate == port + PORT_SEARCH - 1:
                raise
    logger.info("metrics on http://%s:%d/metrics", host, candidate)
    if targets_dir is not None:
        target = "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host
        _drop_dead_targets(targets_dir, target)
        path = target_file(targets_dir, candidate)
        path.with_suffix(".tmp").write_text(json.dumps([{"targets": [f"{target}:{candidate}"]}]) + "\n")
        path.with_suffix(".tmp").replace(path)  # Prometheus never reads half a file
    return candidate


def _drop_dead_targets(targets_dir: Path, host: str) -> None:
    """Delete the discovery files whose port no one listens on (a worker killed with SIGKILL)."""
    for path in targets_dir.glob("agent-*.json"):
        port = path.stem.removeprefix("agent-")
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except ConnectionRefusedError:
            path.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue  # slow or unreadable: keep it


def target_file(targets_dir: Path, port: int) -> Path:
    """The discovery file of the worker whose metrics are on `port`."""
    return targets_dir / f"agent-{port}.json"


def usage_tokens(metrics: Any) -> dict[tuple[str, str], int]:
    """(direction, modality) -> tokens, from livekit-agents' `RealtimeModelMetrics`.

    Tokens the report gives without a modality (a total larger than its per-modality details)
    count as audio: a voice call's usual modality, and the dearer one.
    """
    tokens = {}
    for direction, total, details in (("input", metrics.input_tokens, metrics.input_token_details),
                                      ("output", metrics.output_tokens, metrics.output_token_details)):
        text = details.text_tokens
        audio = max(details.audio_tokens, total - text - details.image_tokens)
        tokens[(direction, "audio")], tokens[(direction, "text")] = audio, text
    return tokens


class TurnTimer:
    """Per-turn response time as the agent sees it.

    `on_input_chunk` gets each chunk of the caller's audio sent to the model (16 kHz PCM16);
    `on_reply_started` is called when the agent starts speaking. A turn's response time is
    from the last loud chunk before that reply to the reply's first audio; a reply with no
    caller speech since the last one (the greeting) is not a turn.
    """

    def __init__(self, observe: Callable[[float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._observe = observe
        self._clock = clock
        self._last_speech: float | None = None

    def on_input_chunk(self, pcm16: bytes) -> None:
        # One dot product per chunk (np.mean costs ~10x more, 50 times a second per call).
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
        if samples.size and float(np.dot(samples, samples)) > SPEECH_RMS * SPEECH_RMS * samples.size:
            self._last_speech = self._clock()

    def on_reply_started(self) -> None:
        if self._last_speech is not None:
            self._observe(self._clock() - self._last_speech)
            self._last_speech = None


class CallMetrics:
    """One call's contributions to the metrics: a `ModelLinkListener` (resilience.py), an input
    tap, and handlers of the AgentSession's events (`watch`).

    Args:
        kind: `web` or `phone`.
        prices: the price table (`voice_calls.pricing.parse_prices`).
        on_usage: also called with each usage report's tokens ((direction, modality) -> count)
            and its cost in USD (the budgets' totals).
        on_ended: also called with the call's length (s) when it ends (without awaiting
            first: the job's other shutdown callbacks flush the record's writes).
        on_response: also called with each turn's response time (s).
    """

    def __init__(self, kind: str, prices: Mapping[tuple[str, str], float],
                 on_usage: Callable[[dict[tuple[str, str], int], float], None] | None = None,
                 on_ended: Callable[[float], None] | None = None,
                 on_response: Callable[[float], None] | None = None) -> None:
        self.kind = kind
        self.prices = prices
        self._on_response = on_response
        self.turns = TurnTimer(self._turn_response)
        self._on_usage = on_usage
        self._on_ended = on_ended
        self._started: float | None = None

    def attach(self, ctx: Any, model: Any, session: Any) -> None:
        """Count the call of job `ctx`: the model link (a `ResilientRealtimeModel`'s listener
        and input tap), the session's events (`watch`), its end (a shutdown callback)."""
        model.add_listener(self)
        model.add_input_tap(self.turns.on_input_chunk)
        self.watch(session)
        ctx.add_shutdown_callback(self.call_ended)

    def _turn_response(self, seconds: float) -> None:
        TURN_RESPONSE.observe(seconds)
        if self._on_response is not None:
            self._on_response(seconds)

    # the call
    def call_started(self) -> None:
        """The caller joined."""
        if self._started is None:
            self._started = time.monotonic()
            CALLS.labels(kind=self.kind).inc()
            CALLS_ACTIVE.inc()

    async def call_ended(self, _reason: str = "") -> None:
        """The job is shutting down (a shutdown callback)."""
        if self._started is not None:
            seconds = time.monotonic() - self._started
            CALL_SECONDS.observe(seconds)
            CALLS_ACTIVE.dec()
            self._started = None
            if self._on_ended is not None:
                self._on_ended(seconds)

    # ModelLinkListener
    def on_model_connected(self, *, first: bool, replayed_messages: int) -> None:
        MODEL_CONNECTS.labels(kind="first" if first else "reconnect").inc()

    def on_model_connection_lost(self, *, reason: str) -> None:
        MODEL_LINK_LOST.labels(reason=reason).inc()

    def on_model_connect_failed(self, failure: ConnectFailure, *, attempt: int, retry_in_s: float | None) -> None:
        MODEL_CONNECT_FAILURES.labels(kind=str(failure.kind), outcome="retrying" if retry_in_s is not None
                                      else "gave_up").inc()
        if retry_in_s is None:
            ERRORS.labels(kind="model_unavailable").inc()

    # the session
    def watch(self, session: Any) -> None:
        """Count what an AgentSession reports: replies started, tool calls, usage, errors."""
        from livekit.agents.metrics import RealtimeModelMetrics

        @session.on("agent_state_changed")
        def _on_state(event: Any) -> None:
            if event.new_state == "speaking":
                self.turns.on_reply_started()

        @session.on("function_tools_executed")
        def _on_tools(event: Any) -> None:
            for call, output in zip(event.function_calls, event.function_call_outputs, strict=False):
                failed = output is None or bool(output.is_error)
                TOOL_CALLS.labels(name=call.name, outcome="error" if failed else "ok").inc()

        @session.on("metrics_collected")
        def _on_metrics(event: Any) -> None:
            if isinstance(event.metrics, RealtimeModelMetrics):
                self.usage(usage_tokens(event.metrics))

        @session.on("error")
        def _on_error(event: Any) -> None:
            ERRORS.labels(kind=type(event.error).__name__).inc()

    def usage(self, tokens: dict[tuple[str, str], int]) -> None:
        """Count one usage report's tokens and their cost."""
        for (direction, modality), count in tokens.items():
            if count:
                MODEL_TOKENS.labels(direction=direction, modality=modality).inc(count)
        cost = pricing.cost_usd(tokens, self.prices)
        MODEL_COST.inc(cost)
        if self._on_usage is not None:
            self._on_usage(tokens, cost)

    def filler_played(self) -> None:
        FILLERS.inc()
