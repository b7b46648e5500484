"""Telephony settings, what provisioning builds from them, and the outbound-call API's refusals.

The calls themselves (livekit-sip, SIPp) are in tests/e2e/test_phone.py; here is what needs
no SIP peer: which configurations are refused, the trunk and rule objects, and the HTTP
errors of ``POST /api/calls/outbound`` before anything is dialled.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from flask.testing import FlaskClient
from livekit import api
from voice_calls import budget

from tests import openapi_check
from token_server import create_app
from token_server.outbound import refusal
from token_server.sip_provision import CONFIG_REFUSED_EXIT_CODE, dispatch_rule, inbound_trunk, outbound_trunk
from token_server.telephony import DISPATCH_RULE_NAME, INBOUND_TRUNK_NAME, ROOM_PREFIX, TelephonySettings
from tokenserver_testing import AGENT_NAME, API_KEY, API_SECRET, make_settings, subprocess_env

RECORDS_KEY = "records-key-0123456789abcdefghijklmnopqrstuvwxyz"
OPEN_TRUNK_LINE = "an open SIP port is toll fraud waiting to happen"


def telephony(**values: object) -> TelephonySettings:
    return TelephonySettings(**{"sip_enabled": True, **values})  # type: ignore[arg-type]


def test_telephony_refuses_an_inbound_trunk_anyone_could_call() -> None:
    assert any(OPEN_TRUNK_LINE in p for p in telephony().problems())
    assert telephony(sip_inbound_allowed_addresses="203.0.113.0/24").problems() == []
    assert telephony(sip_inbound_username="trunk", sip_inbound_password="secret").problems() == []
    assert any("go together" in p for p in telephony(sip_inbound_username="trunk",
                                                     sip_inbound_allowed_addresses="203.0.113.7").problems())


@pytest.mark.parametrize(("values", "named"), [
    ({"sip_inbound_allowed_addresses": "203.0.113.0/24, twilio"}, "SIP_INBOUND_ALLOWED_ADDRESSES"),
    ({"sip_inbound_numbers": "+15550100000, call-me"}, "SIP_INBOUND_NUMBERS"),
    ({"sip_outbound_number": "+15550100000"}, "SIP_OUTBOUND_ADDRESS"),
    ({"sip_outbound_address": "sip:example.pstn.twilio.com", "sip_outbound_number": "+15550100000"},
     "SIP_OUTBOUND_ADDRESS"),
    ({"sip_outbound_address": "example.pstn.twilio.com"}, "SIP_OUTBOUND_NUMBER"),
    ({"sip_outbound_transport": "sctp"}, "SIP_OUTBOUND_TRANSPORT"),
])
def test_each_malformed_setting_is_named(values: dict[str, str], named: str) -> None:
    problems = telephony(**{"sip_inbound_allowed_addresses": "198.51.100.1", **values}).problems()
    assert any(named in p for p in problems), problems


def test_provisioning_refuses_with_one_line_and_its_own_exit_status() -> None:
    env = subprocess_env(LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET, AGENT_NAME=AGENT_NAME,
                         SIP_ENABLED="true", LIVEKIT_URL="ws://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "token_server.sip_provision"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == CONFIG_REFUSED_EXIT_CODE
    assert result.stderr.count("\n") == 1 and OPEN_TRUNK_LINE in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_trunks_and_rule_match_the_settings() -> None:
    tel = telephony(sip_inbound_numbers="+15550100000", sip_inbound_allowed_addresses="203.0.113.0/24",
                    sip_outbound_address="example.pstn.twilio.com:5061", sip_outbound_number="+15550100000",
                    sip_outbound_username="out", sip_outbound_password="pw", sip_outbound_transport="tls")
    inbound = inbound_trunk(tel)
    assert (inbound.name, list(inbound.numbers), list(inbound.allowed_addresses)) == (
        INBOUND_TRUNK_NAME, ["+15550100000"], ["203.0.113.0/24"])
    assert inbound.max_call_duration.seconds == 3600
    rule = dispatch_rule("ST_trunk", AGENT_NAME, 20, 3)
    assert rule.name == DISPATCH_RULE_NAME and list(rule.trunk_ids) == ["ST_trunk"]
    assert rule.rule.dispatch_rule_individual.room_prefix == ROOM_PREFIX
    [agent] = rule.room_config.agents
    assert agent.agent_name == AGENT_NAME and agent.metadata == '{"direction": "inbound"}'
    out = outbound_trunk(tel)
    assert (out.address, list(out.numbers), out.transport) == (
        "example.pstn.twilio.com:5061", ["+15550100000"], api.SIPTransport.SIP_TRANSPORT_TLS)


@pytest.mark.parametrize(("sip_status", "twirp_code", "status", "code"), [
    (486, "unavailable", 409, "callee_busy"),
    (600, "unavailable", 409, "callee_busy"),
    (480, "deadline_exceeded", 409, "no_answer"),
    (487, "canceled", 409, "no_answer"),
    (None, "unknown", 409, "no_answer"),
    (603, "permission_denied", 409, "call_rejected"),
    (404, "not_found", 409, "call_rejected"),
    (503, "unavailable", 502, "trunk_error"),
    (None, "unavailable", 503, "telephony_unavailable"),
    (None, "internal", 502, "trunk_error"),
])
def test_a_failed_dial_maps_to_a_clear_error(sip_status: int | None, twirp_code: str, status: int, code: str) -> None:
    metadata = {"sip_status_code": str(sip_status), "sip_status": "Some Reason"} if sip_status else {}
    message = "sip request timed out" if twirp_code == "unknown" else "dial failed"  # livekit-sip's ring timeout
    error = api.SipCallError(twirp_code, message, status=500, metadata=metadata)
    refused = refusal(error, ring_timeout_s=30)
    assert (refused.status, refused.code) == (status, code), refused.message
    if sip_status:
        assert f"SIP {sip_status}" in refused.message


@pytest.fixture
def client() -> FlaskClient:
    tel = telephony(sip_inbound_allowed_addresses="127.0.0.1", sip_outbound_address="127.0.0.1:9",
                    sip_outbound_number="+15550100000", livekit_url="ws://127.0.0.1:9")
    return create_app(make_settings(records_api_keys=RECORDS_KEY, telephony=tel)).test_client()


def post(client: FlaskClient, body: object, key: str | None = RECORDS_KEY) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = client.post("/api/calls/outbound", json=body, headers=headers)
    openapi_check.problems("/api/calls/outbound", "post", response.status_code, response.headers,
                           response.mimetype, response.data)
    return response.status_code, response.get_json()


def test_outbound_calls_need_an_operator_key(client: FlaskClient) -> None:
    assert post(client, {"to": "+15551234567"}, key=None)[0] == 401
    assert post(client, {"to": "+15551234567"}, key="x" * 40)[0] == 401


@pytest.mark.parametrize("body", [
    {"to": "5551234567"}, {"to": "+1 555 123"}, {}, {"to": "+15551234567", "purpose": ""},
    {"to": "+15551234567", "purpose": "two\nlines"}, {"to": "+15551234567", "room_name": "mine"},
    {"to": "+15551234567", "purpose": "x" * 501},
])
def test_outbound_calls_refuse_a_malformed_request(client: FlaskClient, body: dict) -> None:
    status, answer = post(client, body)
    assert status == 422 and answer["error"]["code"] == "validation_error", answer


def test_outbound_calls_are_off_without_telephony() -> None:
    app = create_app(make_settings(records_api_keys=RECORDS_KEY, telephony=TelephonySettings(sip_enabled=False)))
    status, answer = post(app.test_client(), {"to": "+15551234567"})
    assert (status, answer["error"]["code"]) == (403, "outbound_calls_disabled")
    app = create_app(make_settings(telephony=telephony(sip_outbound_address="127.0.0.1:9")))
    status, answer = post(app.test_client(), {"to": "+15551234567"})
    assert (status, answer["error"]["code"]) == (403, "records_api_disabled")


def test_an_unreachable_livekit_is_a_503(client: FlaskClient) -> None:
    """Nothing listens at LIVEKIT_URL: nothing is dialled, and the caller may retry."""
    status, answer = post(client, {"to": "+15551234567", "purpose": "a reminder"})
    assert status == 503 and answer["error"]["code"] == "telephony_unavailable", answer


def test_an_outbound_call_is_not_placed_once_the_budget_is_spent(redis_url: str) -> None:
    """The cost caps apply to the calls the agent places too: refused before anything is dialled
    (LiveKit at LIVEKIT_URL is unreachable here, so a dial would answer 503 telephony_unavailable)."""
    tel = telephony(sip_inbound_allowed_addresses="127.0.0.1", sip_outbound_address="127.0.0.1:9",
                    sip_outbound_number="+15550100000", livekit_url="ws://127.0.0.1:9")
    app = create_app(make_settings(records_api_keys=RECORDS_KEY, telephony=tel, redis_url=redis_url,
                                   token_daily_budget_usd=1.0))
    status, answer = post(app.test_client(), {"to": "+15551234567"})
    assert (status, answer["error"]["code"]) == (503, "telephony_unavailable"), answer  # under the cap: dialled
    for op, args in budget.usage_writes({("output", "audio"): 100_000}, 1.2):
        getattr(redis.Redis.from_url(redis_url), op)(*args)
    status, answer = post(app.test_client(), {"to": "+15551234567"})
    assert (status, answer["error"]["code"]) == (503, "budget_exhausted"), answer
