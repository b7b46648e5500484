"""The resilient Gemini Live session against the stand-in: drops, GoAway, refusals, stalls.

The plugin's RealtimeSession is driven directly (no LiveKit room): audio goes in with
`push_audio`, the stand-in records what arrived on each connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from google.genai import errors as genai_errors
from livekit import rtc
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from tests.standins.gemini_live import (
    INPUT_SAMPLE_RATE,
    EnergyVad,
    GeminiLiveStandin,
    SessionRecord,
    StandinConfig,
    speech_pcm,
)
from voice_agent.resilience import (
    ConnectFailure,
    FailureKind,
    ModelUnavailableError,
    ResilientRealtimeModel,
    RetryPolicy,
    classify_connect_error,
    parse_time_left,
)

UTTERANCE = speech_pcm("Please tell me what the weather is like in Paris today.", INPUT_SAMPLE_RATE)
FAST_RETRY = RetryPolicy(first_delay_s=0.05, max_delay_s=0.5, quota_min_delay_s=0.2, give_up_after_s=5.0,
                         connect_timeout_s=1.0)


def silence(ms: int) -> bytes:
    return b"\0\0" * (INPUT_SAMPLE_RATE * ms // 1000)


class Events:
    """A ModelLinkListener that writes down what it was told."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

    def on_model_connected(self, **kw: Any) -> None:
        self.log.append(("connected", kw))

    def on_model_connection_lost(self, **kw: Any) -> None:
        self.log.append(("lost", kw))

    def on_model_connect_failed(self, failure: ConnectFailure, **kw: Any) -> None:
        self.log.append(("failed", {"failure": failure, **kw}))

    def names(self) -> list[str]:
        return [name for name, _ in self.log]


@pytest.fixture()
def standin() -> Iterator[GeminiLiveStandin]:
    with GeminiLiveStandin(StandinConfig(reply_pacing=1.0, hold_turn_complete=False)) as server:
        yield server


@asynccontextmanager
async def live_session(standin: GeminiLiveStandin, **kwargs: Any) -> AsyncIterator[tuple[Any, Events]]:
    model = ResilientRealtimeModel(
        api_key="test-key", http_options=standin.http_options(), retry_policy=FAST_RETRY, **kwargs
    )
    events = Events()
    model.add_listener(events)
    session = model.session()
    errors: list[Any] = []
    session.on("error", errors.append)
    session.errors = errors  # type: ignore[attr-defined]
    try:
        yield session, events
    finally:
        await session.aclose()


def push(session: Any, pcm: bytes) -> None:
    """Push 16 kHz PCM16 to the session in 20 ms frames."""
    step = INPUT_SAMPLE_RATE // 50 * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        session.push_audio(rtc.AudioFrame(chunk, INPUT_SAMPLE_RATE, 1, len(chunk) // 2))


async def wait_for(standin: GeminiLiveStandin, predicate: Any, timeout: float = 15.0) -> list[SessionRecord]:
    return await asyncio.to_thread(standin.wait_for, predicate, timeout)


def by_id(sessions: list[SessionRecord], session_id: str) -> SessionRecord:
    return next(s for s in sessions if s.session_id == session_id)


async def test_a_drop_mid_utterance_resumes_with_the_handle_and_loses_no_speech(
    standin: GeminiLiveStandin,
) -> None:
    half = len(UTTERANCE) // 2 // 2 * 2
    async with live_session(standin) as (session, events):
        first = (await wait_for(standin, lambda ss: ss and ss[-1].handles))[-1]
        push(session, UTTERANCE[:half])
        await wait_for(standin, lambda ss: by_id(ss, first.session_id).input_audio_ms > half / 32 - 60)
        await asyncio.to_thread(standin.disconnect, first.session_id, code=1011)
        push(session, UTTERANCE[half:] + silence(900))
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].turns and ss[1].turns[0].reply_text)
    first, second = sessions
    assert first.turns == [] and first.close_code == 1011
    assert second.resumption is not None and second.resumption.known
    assert second.resumption.handle == first.handles[-1]
    assert second.resumption.resumed_session_id == first.session_id
    (turn,) = second.turns
    clean = EnergyVad().feed(UTTERANCE + silence(900), 0.0)  # the same audio without a drop
    spoken_ms = clean[1].audio_ms - clean[0].audio_ms
    assert abs((turn.speech_end_ms - turn.speech_start_ms) - spoken_ms) < 100, "the whole utterance, once"
    assert events.names()[:3] == ["connected", "lost", "connected"]
    assert events.log[2][1]["replayed_messages"] > 0
    assert not second.errors


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-1011", "tcp-reset"])
async def test_a_drop_mid_reply_is_answered_once_on_the_new_connection(
    standin: GeminiLiveStandin, abrupt: bool
) -> None:
    async with live_session(standin) as (session, events):
        first = (await wait_for(standin, lambda ss: ss and ss[-1].handles))[-1]
        await asyncio.sleep(0.6)  # the handle is older than the in-flight window
        push(session, UTTERANCE + silence(900))
        await wait_for(standin, lambda ss: ss[0].turns and ss[0].turns[0].first_audio_at)
        await asyncio.to_thread(standin.disconnect, first.session_id, abrupt=abrupt)
        sessions = await wait_for(
            standin, lambda ss: len(ss) == 2 and ss[1].turns and ss[1].turns[0].turn_complete_at, timeout=20
        )
        await asyncio.sleep(0.5)
        sessions = standin.sessions
    first, second = sessions
    assert first.turns[0].turn_complete_at is None, "the first reply was cut"
    assert [t.kind for t in second.turns] == ["audio"], "the cut turn is answered once, by the new connection"
    assert second.resumption is not None and second.resumption.resumed_session_id == first.session_id
    assert second.resumption.resumed_turns == 0, "the handle predates the cut turn, so it is replayed"
    assert "lost" in events.names()


async def test_a_completed_turn_is_not_replayed(standin: GeminiLiveStandin) -> None:
    async with live_session(standin) as (session, _):
        await wait_for(standin, lambda ss: ss and ss[-1].handles)
        push(session, UTTERANCE + silence(900))
        first = (await wait_for(
            standin, lambda ss: ss[0].turns and ss[0].turns[0].turn_complete_at and len(ss[0].handles) >= 2
        ))[0]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(standin.disconnect, first.session_id)
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].handles)
        await asyncio.sleep(1.0)
        second = standin.sessions[1]
    assert second.resumption is not None and second.resumption.resumed_turns == 1
    assert second.turns == [], "a turn already answered is not answered again"
    assert sessions[0].session_id == first.session_id


async def test_go_away_waits_for_the_reply_to_finish(standin: GeminiLiveStandin) -> None:
    async with live_session(standin, go_away_margin_s=0.5) as (session, events):
        await wait_for(standin, lambda ss: ss and ss[-1].handles)
        push(session, UTTERANCE + silence(900))
        first = (await wait_for(standin, lambda ss: ss[0].turns and ss[0].turns[0].first_audio_at))[0]
        await asyncio.to_thread(standin.go_away, first.session_id, time_left_s=8.0)
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].setup, timeout=20)
    first, second = sessions
    turn = first.turns[0]
    assert turn.turn_complete_at is not None and not turn.interrupted, "the reply was not cut"
    assert second.connected_at >= turn.generation_complete_at
    assert second.connected_at - first.connected_at < 8.0, "reconnected before the time ran out"
    assert second.resumption is not None and second.resumption.resumed_session_id == first.session_id
    assert second.turns == []
    assert ("lost", {"reason": "goAway"}) in events.log


async def test_go_away_with_no_reply_in_flight_reconnects_at_once(standin: GeminiLiveStandin) -> None:
    async with live_session(standin) as (_, _events):
        first = (await wait_for(standin, lambda ss: ss and ss[-1].handles))[-1]
        await asyncio.to_thread(standin.go_away, first.session_id, time_left_s=30.0)
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].setup, timeout=10)
    assert sessions[1].connected_at - sessions[0].connected_at < 5.0


async def test_quota_refusals_at_start_are_retried_with_backoff(standin: GeminiLiveStandin) -> None:
    standin.refuse_handshakes(429, count=2)
    async with live_session(standin) as (_, events):
        await wait_for(standin, lambda ss: ss and ss[-1].handles)
        await asyncio.sleep(0.1)
    failed = [kw for name, kw in events.log if name == "failed"]
    assert [f["failure"].kind for f in failed] == [FailureKind.QUOTA, FailureKind.QUOTA]
    assert all(f["retry_in_s"] >= FAST_RETRY.quota_min_delay_s for f in failed)
    assert events.names()[-1] == "connected"
    assert [r.status for r in standin.rejected_handshakes] == [429, 429]


async def test_a_bad_key_is_not_retried(standin: GeminiLiveStandin) -> None:
    standin.refuse_handshakes(401)
    async with live_session(standin) as (session, events):
        for _ in range(100):
            if session.errors:
                break
            await asyncio.sleep(0.05)
    assert [r.status for r in standin.rejected_handshakes] == [401]
    (failed,) = [kw for name, kw in events.log if name == "failed"]
    assert failed["failure"].kind is FailureKind.AUTH and failed["retry_in_s"] is None
    (error,) = session.errors
    assert not error.recoverable
    assert isinstance(error.error.__cause__, ModelUnavailableError) or isinstance(error.error, ModelUnavailableError)


async def test_a_stalled_setup_times_out_and_is_retried(standin: GeminiLiveStandin) -> None:
    standin.stall_setups(count=1)
    async with live_session(standin) as (_, events):
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].handles)
    assert sessions[0].stalled and not sessions[1].stalled
    assert events.names() == ["failed", "connected"]
    assert events.log[0][1]["failure"].kind is FailureKind.UNREACHABLE


async def test_a_refused_reconnect_is_retried_until_the_service_is_back(standin: GeminiLiveStandin) -> None:
    async with live_session(standin) as (session, events):
        first = (await wait_for(standin, lambda ss: ss and ss[-1].handles))[-1]
        await asyncio.to_thread(standin.stop)  # connection refused from now on
        await asyncio.sleep(1.0)
        await asyncio.to_thread(standin.start)
        sessions = await wait_for(standin, lambda ss: len(ss) == 2 and ss[1].handles, timeout=15)
        assert not session.errors or all(e.recoverable for e in session.errors)
    assert sessions[1].resumption is not None and sessions[1].resumption.resumed_session_id == first.session_id
    kinds = [kw["failure"].kind for name, kw in events.log if name == "failed"]
    assert kinds and set(kinds) == {FailureKind.UNREACHABLE}


def _invalid_status(status: int, retry_after: str | None = None) -> InvalidStatus:
    headers = Headers({"Retry-After": retry_after} if retry_after else {})
    return InvalidStatus(Response(status, "x", headers, b""))


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (_invalid_status(401), FailureKind.AUTH, False),
        (_invalid_status(403), FailureKind.AUTH, False),
        (_invalid_status(429), FailureKind.QUOTA, True),
        (_invalid_status(503), FailureKind.SERVER, True),
        (_invalid_status(404), FailureKind.REJECTED, False),
        (ConnectionRefusedError(111, "refused"), FailureKind.UNREACHABLE, True),
        (TimeoutError(), FailureKind.UNREACHABLE, True),
        (genai_errors.APIError(1007, {"message": "API key not valid. Please pass a valid API key."}),
         FailureKind.AUTH, False),
        (genai_errors.APIError(1011, {"message": "RESOURCE_EXHAUSTED: quota"}), FailureKind.QUOTA, True),
        (genai_errors.APIError(1011, {"message": "Internal error occurred."}), FailureKind.SERVER, True),
        (genai_errors.APIError(1008, {"message": "models/x is not found"}), FailureKind.REJECTED, False),
        (ssl.SSLCertVerificationError("bad cert"), FailureKind.UNREACHABLE, False),
    ],
)
def test_connect_errors_are_classified(exc: BaseException, kind: FailureKind, retryable: bool) -> None:
    failure = classify_connect_error(exc)
    assert (failure.kind, failure.retryable) == (kind, retryable)


def test_retry_policy_backs_off_and_honours_retry_after() -> None:
    policy = RetryPolicy(first_delay_s=0.25, max_delay_s=8.0, quota_min_delay_s=4.0, give_up_after_s=60)
    unreachable = classify_connect_error(ConnectionRefusedError())
    assert [policy.delay(n, unreachable) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(0, classify_connect_error(_invalid_status(429))) == 4.0
    assert policy.delay(0, classify_connect_error(_invalid_status(429, "30"))) == 30.0
    assert policy.delay(0, classify_connect_error(_invalid_status(503, "600"))) == 60.0


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("59.5s", 59.5), ("0s", 0.0), ("soon", None), (None, None)])
def test_go_away_time_left_is_parsed(text: str | None, seconds: float | None) -> None:
    assert parse_time_left(text) == seconds
