"""Phone calls in the agent: which jobs are phone calls, their tools and their greeting.

The calls themselves (livekit-sip, SIPp, REFER, BYE, DTMF) are in tests/e2e/test_phone.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from livekit import api
from livekit.agents.llm import ToolError
from voice_calls import budget

from tests.redis_server import running_redis
from voice_agent import claims, phone_budget, records, telephony
from voice_agent.assistant import Assistant
from voice_agent.settings import DEFAULT_FAQ_PATH
from voice_agent.telephony import PhoneCall, PhoneDispatch, transfer_uri
from voice_agent.tools import Faq

OUTBOUND = json.dumps({"direction": "outbound", "participant_identity": "sip_+15551234567",
                       "phone_number": "+15551234567", "purpose": "to confirm Tuesday's visit", "ring_timeout_s": 30})


@pytest.mark.parametrize("metadata", ["", "not json", "[]", json.dumps({"participant_identity": "user-1"}),
                                      json.dumps({"direction": "sideways"})])
def test_only_the_sip_dispatches_are_phone_calls(metadata: str) -> None:
    assert PhoneDispatch.parse(metadata) is None


def test_an_outbound_dispatch_names_the_callee_the_purpose_and_the_ring_time() -> None:
    assert PhoneDispatch.parse(OUTBOUND) == PhoneDispatch(
        direction="outbound", participant_identity="sip_+15551234567", phone_number="+15551234567",
        purpose="to confirm Tuesday's visit", ring_timeout_s=30.0)
    assert PhoneDispatch.parse('{"direction": "inbound"}') == PhoneDispatch(direction="inbound")


def test_the_greeting_says_why_an_outbound_call_was_placed() -> None:
    outbound = PhoneCall(PhoneDispatch.parse(OUTBOUND), transfer_to="", on_end=lambda _r: None)  # type: ignore[arg-type]
    assert "to confirm Tuesday's visit" in outbound.greeting()
    inbound = PhoneCall(PhoneDispatch("inbound"), transfer_to="", on_end=lambda _r: None)
    assert "phone" in inbound.greeting() and "Tuesday" not in inbound.greeting()


@pytest.mark.parametrize(("setting", "uri"), [
    ("+15550009999", "tel:+15550009999"), ("tel:+15550009999", "tel:+15550009999"),
    ("sip:desk@pbx.example.org", "sip:desk@pbx.example.org"),
])
def test_the_transfer_target_is_a_uri(setting: str, uri: str) -> None:
    assert transfer_uri(setting) == uri


def tool_names(assistant: Assistant) -> set[str]:
    return {tool.id for tool in assistant.tools}


def test_phone_calls_get_end_call_and_transfer_call_browsers_do_not() -> None:
    faq = Faq.load(DEFAULT_FAQ_PATH)
    browser = Assistant(instructions="Be brief.", faq=faq)
    assert not {"end_call", "transfer_call"} & tool_names(browser)
    phone = PhoneCall(PhoneDispatch("inbound"), transfer_to="+15550009999", on_end=lambda _r: None)
    assert {"end_call", "transfer_call", "get_current_time"} <= tool_names(Assistant(instructions="x", faq=faq, phone=phone))
    no_transfer = PhoneCall(PhoneDispatch("inbound"), transfer_to="", on_end=lambda _r: None)
    names = tool_names(Assistant(instructions="x", faq=faq, phone=no_transfer))
    assert "end_call" in names and "transfer_call" not in names


class _SlowSip:
    """`job.api.sip` whose transfer waits until `done` is set, then succeeds or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[api.TransferSIPParticipantRequest] = []
        self.done = asyncio.Event()
        self.fail = fail

    async def transfer_sip_participant(self, request: api.TransferSIPParticipantRequest) -> None:
        self.requests.append(request)
        await self.done.wait()
        if self.fail:
            raise api.TwirpError("unavailable", "the callee's phone refused the REFER", status=503)


async def test_a_second_transfer_while_the_first_is_under_way_does_not_undo_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sip = _SlowSip()
    job = SimpleNamespace(api=SimpleNamespace(sip=sip), room=SimpleNamespace(name="call-1"))
    monkeypatch.setattr(telephony, "get_job_context", lambda: job)
    ended: list[str] = []
    phone = PhoneCall(PhoneDispatch("inbound"), transfer_to="+15550009999", on_end=ended.append)
    phone._participant = SimpleNamespace(identity="sip_+15550123456")  # type: ignore[assignment]

    first = asyncio.create_task(phone._transfer("tel:+15550009999"))
    await asyncio.sleep(0)
    second = await asyncio.wait_for(phone._transfer("tel:+15550009999"), 5)
    assert second == "The caller is already being transferred."
    assert phone.left_reason() == "transferred to tel:+15550009999"  # the line may drop now
    sip.done.set()
    assert await first == "The caller has been transferred."
    assert len(sip.requests) == 1 and ended == ["transferred to tel:+15550009999"]


async def test_a_failed_transfer_lets_the_caller_stay_and_be_transferred_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sip = _SlowSip(fail=True)
    sip.done.set()
    job = SimpleNamespace(api=SimpleNamespace(sip=sip), room=SimpleNamespace(name="call-1"))
    monkeypatch.setattr(telephony, "get_job_context", lambda: job)
    phone = PhoneCall(PhoneDispatch("inbound"), transfer_to="+15550009999", on_end=lambda _r: None)
    phone._participant = SimpleNamespace(identity="sip_+15550123456")  # type: ignore[assignment]
    with pytest.raises(ToolError, match="the transfer failed"):
        await phone._transfer("tel:+15550009999")
    assert phone.left_reason() == "caller left"
    sip.fail = False
    assert await phone._transfer("tel:+15550009999") == "The caller has been transferred."
    assert len(sip.requests) == 2


async def test_an_inbound_phone_call_finds_the_budget_spent_unless_it_is_already_going_on(tmp_path: Path) -> None:
    """Phone calls do not pass the token server: the agent reads the same totals and caps."""
    with running_redis(tmp_path) as server:
        client = records.connect(server.url)
        call = records.CallRecorder(client, "call-_+15550123456_abc", "job-1")
        assert await claims.RoomClaim(client, call.room, "job-1").take(10_000)  # as the job does first
        now = time.time()
        assert await phone_budget.spent(call, daily_usd=0, monthly_usd=0) is None  # no caps
        assert await phone_budget.spent(call, daily_usd=1.0, monthly_usd=0) is None  # nothing spent yet
        for op, args in budget.usage_writes({("output", "audio"): 100_000}, 1.2, at=now):
            await getattr(client, op)(*args)
        reached = await phone_budget.spent(call, daily_usd=1.0, monthly_usd=0, now=now)
        assert reached is not None and (reached.period, reached.cap_usd) == ("today's", 1.0)
        assert 0 < reached.retry_after_s <= 86_401
        reached = await phone_budget.spent(call, daily_usd=5.0, monthly_usd=1.0, now=now)
        assert reached is not None and reached.period == "this month's"
        # The same call, picked up by another job (its record exists): it goes on.
        call.start(participant_identity=None, participant_name=None, metadata="{}")
        assert await call.flush()
        assert await phone_budget.spent(call, daily_usd=1.0, monthly_usd=0, now=now) is None
        await call.aclose()
        await client.aclose()
