"""Phone calls over real SIP: SIPp calls the appliance (and is called by it) on loopback.

The stack is the native one plus livekit-sip (SIP_ENABLED=true), provisioned from its
settings like any start (harness.telephony_overrides): an inbound trunk for `TRUNK_NUMBER`
that takes calls from 127.0.0.1 only and asks for a digest password, the dispatch rule,
and an outbound trunk whose "provider" is a SIPp callee on `callee_port`. The caller and the callee are SIPp
(`tests/e2e/sipp.py`) speaking G.711 μ-law RTP; tcpdump records that RTP, and the Gemini
Live stand-in records what reached the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from livekit import api
from voice_calls import budget

from tests.audio import envelope_correlation, mulaw_decode, mulaw_encode, synthesize, write_wav
from tests.e2e.harness import (
    TRUNK_NUMBER,
    TRUNK_PASSWORD,
    TRUNK_USER,
    ProcessStack,
    running_stack,
    telephony_overrides,
)
from tests.ports import free_port
from tests.e2e.sipp import (
    PHONE_SAMPLE_RATE,
    PhoneCallResult,
    RtpCapture,
    Sipp,
    audible_seconds,
    caller_scenario,
    callee_scenario,
    first_audible,
    place_call,
    ulaw_file,
)
from tests.standins.gemini_live import INPUT_SAMPLE_RATE, GeminiLiveStandin, SessionRecord, ToolCallSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CALLER = "+15550123456"
CALLEE = "+15550142424"
TRANSFER_TO = "+15550009999"
DAILY_BUDGET_USD = 1000.0
RING_TIMEOUT_S = 5
UTTERANCE = "What time is it in Paris right now?"
#: Silence before the caller speaks: the greeting plays first (the agent and its model link
#: may take seconds to start on a busy machine).
LEAD_S = 10.0


@pytest.fixture(scope="module")
def callee_port() -> int:
    """Where the outbound trunk sends calls: a SIPp callee listens there during a test."""
    return free_port(udp=True)


@pytest.fixture(scope="module")
def phone_stack(
    standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path, callee_port: int
) -> Iterator[ProcessStack]:
    """The native stack with livekit-sip, its trunks and dispatch rule provisioned."""
    extra = {
        **telephony_overrides(outbound_port=callee_port),
        "SIP_OUTBOUND_RING_TIMEOUT_S": str(RING_TIMEOUT_S),
        "SIP_TRANSFER_TO": TRANSFER_TO,
        # High enough for every other test; test_a_phone_call_after_the_budget_is_spent_... spends it.
        "TOKEN_DAILY_BUDGET_USD": str(DAILY_BUDGET_USD),
        # A job holds its room for this long without a refresh; this machine is shared and busy,
        # and these tests are not about handing calls over (tests/e2e/test_restarts.py is).
        "AGENT_ROOM_CLAIM_TTL_S": "15",
    }
    with running_stack(standin.base_url, str(standin.ca_file), tmp_path_factory.mktemp("phone-state"),
                       log_dir / "phone", extra) as processes:
        yield processes


@pytest.fixture
def tool_call(standin: GeminiLiveStandin) -> Iterator[Any]:
    """Set the tool the stand-in calls on each spoken turn for one test: `tool_call(name)`."""
    config = standin.config

    def use(name: str) -> None:
        standin.config = dataclasses.replace(config, tool_call=ToolCallSpec(name=name))

    yield use
    standin.config = config


def speech_file(workdir: Path, tail_s: float, lead_s: float = LEAD_S) -> tuple[Path, np.ndarray]:
    """The caller's audio: `lead_s` of silence, the utterance, `tail_s` of silence (μ-law file),
    and the speech as it goes on the wire (decoded back to int16 at 8 kHz)."""
    speech = synthesize(UTTERANCE, PHONE_SAMPLE_RATE)
    path = ulaw_file(workdir / "speech.ulaw", speech, lead_s, tail_s)
    return path, mulaw_decode(mulaw_encode(speech))


def call_in(sip_port: int | str, workdir: Path, scenario: str, *, local_ip: str = "127.0.0.1",
            password: str = TRUNK_PASSWORD) -> PhoneCallResult:
    """SIPp calls `TRUNK_NUMBER` at 127.0.0.1:`sip_port` as `CALLER`, from `local_ip`."""
    return place_call(workdir, scenario, local_ip=local_ip, remote=f"127.0.0.1:{sip_port}",
                      service=TRUNK_NUMBER, caller=CALLER, username=TRUNK_USER, password=password)


def session_after(standin: GeminiLiveStandin, wall_start: float, predicate: Any, timeout: float = 30) -> SessionRecord:
    """The stand-in session opened after `wall_start` (Unix s) that satisfies `predicate`."""
    after = time.monotonic() - (time.time() - wall_start)
    found = standin.wait_for(lambda ss: [s for s in ss if s.connected_at >= after and predicate(s)], timeout)
    return [s for s in found if s.connected_at >= after and predicate(s)][-1]


def records(stack: ProcessStack, path: str = "") -> Any:
    """GET /api/calls[/<room>] through the front door with the operators' key."""
    request = urllib.request.Request(f"{stack.web_url}/api/calls{path}",
                                     headers={"Authorization": f"Bearer {stack.env['RECORDS_API_KEYS']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def phone_record(stack: ProcessStack, number: str, since: float, ended: bool = True, timeout_s: float = 30) -> dict[str, Any]:
    """The newest call record with `number` started after `since` (Unix s), once it has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        calls = [c for c in records(stack)["calls"]
                 if c.get("phone_number") == number and (c["started_at"] or 0) >= since - 1]
        if calls and (calls[0]["ended_at"] is not None or not ended):
            return records(stack, "/" + calls[0]["room"])
        assert time.monotonic() < deadline, f"no {'ended ' if ended else ''}record of a call with {number}: {calls}"
        time.sleep(0.5)


def outbound(stack: ProcessStack, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /api/calls/outbound through the front door with the operators' key."""
    request = urllib.request.Request(
        f"{stack.web_url}/api/calls/outbound", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {stack.env['RECORDS_API_KEYS']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_livekit_sip_serves_its_metrics(phone_stack: ProcessStack) -> None:
    """SIP_PROMETHEUS_PORT: livekit-sip's own Prometheus metrics (scripts/monitoring.py's `sip` job)."""
    url = f"http://127.0.0.1:{phone_stack.env['SIP_PROMETHEUS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"go_goroutines" in response.read()


# --- provisioning ---------------------------------------------------------------------------

async def test_provisioning_again_changes_nothing(phone_stack: ProcessStack) -> None:
    """Every start provisions; a second run updates the same trunks and rule in place."""
    env = phone_stack.env
    lk = api.LiveKitAPI(env["LIVEKIT_URL"].replace("ws", "http", 1), env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
    async with lk:
        async def listing() -> tuple[list[str], list[str], list[str]]:
            inbound = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
            outbound_ = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
            rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            return ([t.sip_trunk_id for t in inbound.items], [t.sip_trunk_id for t in outbound_.items],
                    [r.sip_dispatch_rule_id for r in rules.items])

        before = await listing()
        again = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "token_server.sip_provision"], env=env, capture_output=True,
            text=True, timeout=60,
        )
        assert again.returncode == 0, again.stderr
        after = await listing()
    assert [len(ids) for ids in before] == [1, 1, 1], before
    assert after == before
    assert f"inbound trunk {before[0][0]}" in again.stdout


# --- inbound --------------------------------------------------------------------------------

def check_an_inbound_call(
    sip_port: int, standin: GeminiLiveStandin, workdir: Path, dtmf: tuple[str, ...] = ()
) -> PhoneCallResult:
    """SIPp calls `TRUNK_NUMBER` at 127.0.0.1:`sip_port`, speaks after the greeting, listens,
    presses the `dtmf` keys, hangs up. Checks that the call was answered, the model heard the
    caller as 16 kHz PCM16 with the speech's envelope, and the greeting and the reply came back
    over RTP. Also run against the compose stack (tests/compose).

    Returns:
        The call (SIPp's messages, RTP both ways).
    """
    # After the speech: ~10 s for the reply (a tool call's answer is long), then the keys and
    # a few seconds for them to reach the model (it takes them once its reply has played).
    audio, sent_speech = speech_file(workdir, tail_s=16.0)
    talk_ms = int((LEAD_S + 18.0) * 1000)
    call = call_in(sip_port, workdir, caller_scenario(audio=audio, talk_ms=talk_ms, password=TRUNK_PASSWORD,
                                                      dtmf=dtmf, dtmf_at_ms=talk_ms - 6000))
    assert call.run.returncode == 0, call.run.errors[-3000:]
    assert call.run.final_answers() == ["SIP/2.0 407 Unauthorized", "SIP/2.0 200 OK"]

    session = session_after(standin, call.started_at, lambda s: any(t.kind == "audio" and t.reply_text for t in s.turns))
    assert all(m.message.realtime_input.audio.mime_type == f"audio/pcm;rate={INPUT_SAMPLE_RATE}"
               for m in session.messages_of("realtime_input.audio"))
    received = np.frombuffer(bytes(session.input_audio), dtype=np.int16)
    write_wav(workdir / "model-input.wav", received, INPUT_SAMPLE_RATE)  # to listen to when this fails
    correlation = envelope_correlation(sent_speech, PHONE_SAMPLE_RATE, received, INPUT_SAMPLE_RATE)
    assert correlation > 0.85, (f"speech envelope correlation {correlation:.2f}; {session.input_audio_ms:.0f} ms "
                                f"received, VAD {[(e.kind, e.audio_ms) for e in session.vad_events]}")
    [spoken] = [t for t in session.turns if t.kind == "audio"]
    assert abs((spoken.speech_end_ms - spoken.speech_start_ms) / 1000 - len(sent_speech) / PHONE_SAMPLE_RATE) < 0.6

    speech_starts = int(LEAD_S * PHONE_SAMPLE_RATE)
    greeting_at = first_audible(call.packets, call.received[0].at)
    assert greeting_at is not None and greeting_at < call.sent_at(speech_starts), "no greeting before the caller spoke"
    reply_at = first_audible(call.packets, call.sent_at(speech_starts + len(sent_speech) - 1))
    assert reply_at is not None, "no reply audio after the caller spoke"
    return call


def test_an_inbound_call_is_answered_heard_and_recorded(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    """SIPp calls in, speaks, listens, presses 1 and 2, hangs up: the model hears the caller as
    16 kHz PCM, the reply comes back over RTP, the keys reach the model, the job ends, and the
    record holds the number and the turns."""
    call = check_an_inbound_call(int(phone_stack.env["SIP_PORT"]), standin, tmp_path, dtmf=("1", "2"))

    # The keys reached the model as text.
    session = session_after(standin, call.started_at, lambda s: any("pressed" in t.text for t in s.turns))
    assert any("pressed 1 2" in t.text for t in session.turns), [t.text for t in session.turns]

    # Hanging up ended the job; the record has the number, the turns and why it ended.
    record = phone_record(phone_stack, CALLER, call.started_at)
    assert record["direction"] == "inbound" and record["sip_call_id"]
    assert record["participant_identity"] == f"sip_{CALLER}"
    assert record["end_reason"] == "caller left"
    roles = [t["role"] for t in record["turns"]]
    assert "user" in roles and "assistant" in roles, record["turns"]
    assert any("speech" in t["text"] for t in record["turns"] if t["role"] == "user")
    assert phone_stack.wait_for_log("agent", "caller left")


def test_end_call_hangs_up_after_a_goodbye(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, tool_call: Any, tmp_path: Path
) -> None:
    """The model calls end_call: the agent says goodbye, then the caller's phone gets a BYE."""
    tool_call("end_call")
    audio, sent_speech = speech_file(tmp_path, tail_s=25.0)
    scenario = caller_scenario(audio=audio, talk_ms=40_000, password=TRUNK_PASSWORD, hang_up=False)
    call = call_in(phone_stack.env["SIP_PORT"], tmp_path, scenario)
    assert call.run.returncode == 0, call.run.errors[-3000:]
    [bye] = call.run.received("BYE")
    speech_sent_until = call.sent_at(int(LEAD_S * PHONE_SAMPLE_RATE) + len(sent_speech) - 1)
    assert first_audible(call.packets, speech_sent_until) is not None, "no goodbye before the BYE"
    record = phone_record(phone_stack, CALLER, call.started_at)
    assert record["end_reason"] == "agent ended the call", record
    assert [t["name"] for t in record["tool_calls"]] == ["end_call"]
    assert bye.startswith("BYE sip:")


def test_transfer_call_refers_the_caller_to_a_person(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, tool_call: Any, tmp_path: Path
) -> None:
    """The model calls transfer_call: the caller's phone gets a REFER to SIP_TRANSFER_TO."""
    tool_call("transfer_call")
    audio, _ = speech_file(tmp_path, tail_s=25.0)
    scenario = caller_scenario(audio=audio, talk_ms=40_000, password=TRUNK_PASSWORD, expect_refer=True)
    call = call_in(phone_stack.env["SIP_PORT"], tmp_path, scenario)
    assert call.run.returncode == 0, call.run.errors[-3000:]
    [refer] = call.run.received("REFER")
    refer_to = next(line for line in refer.splitlines() if line.lower().startswith(("refer-to:", "r:")))
    assert TRANSFER_TO in refer_to, refer_to
    record = phone_record(phone_stack, CALLER, call.started_at)
    sip_log = (phone_stack.log_dir / "sip.log").read_text(errors="replace")
    if any("inbound call failed to transfer" in line and record["sip_call_id"] in line for line in sip_log.splitlines()):
        # livekit-sip v1.8.0 now and then fails the REFER within milliseconds ("transaction failed
        # to complete (0 intermediate responses)") although the phone accepted it: the agent
        # hears that the transfer failed and must not record one.
        assert record["end_reason"] == "caller left", record
    else:
        assert record["end_reason"] == f"transferred to tel:{TRANSFER_TO}", record


# --- refusals ---------------------------------------------------------------------------------

def test_a_phone_call_after_the_budget_is_spent_hears_why_and_is_hung_up(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    """Phone calls do not pass the token server: once today's cost reaches its cap, the agent
    answers an inbound call with the budget message, without connecting the model, and hangs up."""
    client = redis.Redis.from_url(phone_stack.env["REDIS_URL"], decode_responses=True)
    day = budget.day_key(time.time())
    sessions_before = len(standin.sessions)
    client.hincrbyfloat(day, "cost_usd", DAILY_BUDGET_USD)  # as if earlier calls had spent it
    try:
        scenario = caller_scenario(audio=None, talk_ms=30_000, password=TRUNK_PASSWORD, hang_up=False)
        call = call_in(phone_stack.env["SIP_PORT"], tmp_path, scenario)
    finally:
        client.hincrbyfloat(day, "cost_usd", -DAILY_BUDGET_USD)
    assert call.run.returncode == 0, call.run.errors[-3000:]
    assert call.run.final_answers() == ["SIP/2.0 407 Unauthorized", "SIP/2.0 200 OK"]
    [bye] = call.run.received("BYE")
    heard_s = audible_seconds(call.packets)  # the message is 4.7 s, with pauses between words
    assert heard_s > 2.0, f"only {heard_s:.1f} s of the budget message was heard before the BYE"
    record = phone_record(phone_stack, CALLER, call.started_at)
    assert record["end_reason"] == "budget exhausted", record
    assert len(standin.sessions) == sessions_before  # the model was never connected
    assert bye.startswith("BYE sip:")


def test_calls_from_elsewhere_or_with_a_wrong_password_never_reach_the_agent(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, tmp_path: Path
) -> None:
    sessions_before = len(standin.sessions)
    # 127.0.0.2 is this machine too, but not in SIP_INBOUND_ALLOWED_ADDRESSES (127.0.0.1/32):
    # LiveKit drops such calls without a final answer (a scanner learns nothing).
    elsewhere = call_in(phone_stack.env["SIP_PORT"], tmp_path / "elsewhere", caller_scenario(
        audio=None, talk_ms=0, password=None, refused_with=0), local_ip="127.0.0.2")
    assert "UDP message sent" in elsewhere.run.messages, elsewhere.run.errors  # the INVITE went out
    assert elsewhere.run.final_answers() == [], elsewhere.run.messages
    wrong = call_in(phone_stack.env["SIP_PORT"], tmp_path / "wrong-password", caller_scenario(
        audio=None, talk_ms=0, password="not-the-password", refused_with=401), password="not-the-password")
    assert wrong.run.returncode == 0, wrong.run.errors[-3000:]
    assert wrong.run.received("SIP/2.0 407"), "no digest challenge"

    time.sleep(3)  # a dispatch would have started a session by now
    assert len(standin.sessions) == sessions_before
    calls = [c for c in records(phone_stack)["calls"] if (c["started_at"] or 0) >= elsewhere.started_at - 1]
    assert calls == []


# --- outbound ---------------------------------------------------------------------------------

def test_an_outbound_call_greets_the_callee_with_its_purpose(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, callee_port: int, tmp_path: Path
) -> None:
    # The agent greets once the call is answered (its model connects meanwhile): the callee
    # waits for the greeting longer than a caller does before speaking.
    audio, sent_speech = speech_file(tmp_path, tail_s=10.0, lead_s=LEAD_S + 8)
    callee = Sipp(tmp_path, callee_scenario(answer=200, audio=audio, talk_ms=int((LEAD_S + 20) * 1000)),
                  local_ip="127.0.0.1", sip_port=callee_port, media_port=free_port(udp=True))
    with RtpCapture(tmp_path, callee.media_port) as capture:
        callee.start()
        started = time.time()
        status, body = outbound(phone_stack, {"to": CALLEE, "purpose": "to confirm tomorrow's 10:00 appointment"})
        assert status == 201, body
        run = callee.wait(60)
    assert run.returncode == 0, run.errors[-3000:]
    assert body["room_name"].startswith("call-out-") and body["participant_identity"] == f"sip_{CALLEE}"
    [invite] = run.received("INVITE")
    assert invite.startswith(f"INVITE sip:{CALLEE}@") and f"<sip:{TRUNK_NUMBER}@" in invite

    # The greeting's instructions carry the purpose; once the callee hung up (the session
    # closed), the model had heard their words.
    session = session_after(standin, started, lambda s: any("10:00 appointment" in t.text for t in s.turns)
                            and s.closed_at is not None)
    packets = capture.packets()
    assert first_audible(packets, started) is not None, "the callee heard nothing"
    received = np.frombuffer(bytes(session.input_audio), dtype=np.int16)
    correlation = envelope_correlation(sent_speech, PHONE_SAMPLE_RATE, received, INPUT_SAMPLE_RATE)
    assert correlation > 0.85, f"callee's speech envelope correlation {correlation:.2f}"
    record = phone_record(phone_stack, CALLEE, started)
    assert record["direction"] == "outbound" and record["room"] == body["room_name"]


@pytest.mark.parametrize(("answer", "code"), [(486, "callee_busy"), (0, "no_answer")])
def test_an_outbound_call_that_fails_is_a_clear_error(
    phone_stack: ProcessStack, standin: GeminiLiveStandin, callee_port: int, tmp_path: Path, answer: int, code: str
) -> None:
    callee = Sipp(tmp_path, callee_scenario(answer=answer), local_ip="127.0.0.1", sip_port=callee_port,
                  media_port=free_port(udp=True)).start()
    started = time.monotonic()
    status, body = outbound(phone_stack, {"to": CALLEE})
    took = time.monotonic() - started
    run = callee.wait(30)
    assert run.returncode == 0, run.errors[-3000:]
    assert status == 409 and body["error"]["code"] == code, body
    if answer == 0:
        assert RING_TIMEOUT_S - 1 < took < RING_TIMEOUT_S + 10, took
        assert run.received("CANCEL")


def test_outbound_calls_need_an_operator_key_and_a_valid_number(phone_stack: ProcessStack) -> None:
    request = urllib.request.Request(f"{phone_stack.web_url}/api/calls/outbound", data=b'{"to": "+15551234567"}',
                                     method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    status, body = outbound(phone_stack, {"to": "5551234567"})
    assert status == 422 and "to" in body["error"]["message"]

