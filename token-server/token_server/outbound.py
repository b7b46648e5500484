"""``POST /api/calls/outbound``: the agent phones someone (operators only).

``{"to": "+15551234567", "purpose": "..."}`` with ``Authorization: Bearer <key>`` (one of
`RECORDS_API_KEYS`, as for the call records). The call gets a fresh room (`ROOM_PREFIX` +
``out-`` + random) with the agent dispatched (metadata: the number, the purpose, how long
it may ring), then LiveKit dials through the appliance's outbound trunk
(`CreateSIPParticipant`, waiting until answered). The answer is 201 with the room once the
callee picks up; the agent then greets them with the purpose. Busy, unanswered and
rejected calls are 409 with a code saying which; the room is deleted again.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import aiohttp
import structlog
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from google.protobuf.duration_pb2 import Duration
from livekit import api
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .api import current_budgets, read_json_object
from .auth import KeyRing
from .errors import ApiError
from .schemas import describe_request_error
from .settings import Settings
from .telephony import PHONE_NUMBER, ROOM_PREFIX, find_outbound_trunk

log = structlog.get_logger("token_server")

bp = Blueprint("outbound", __name__, url_prefix="/api/calls")

#: SIP final statuses (RFC 3261 section 21) and what they mean for the caller of the API.
BUSY = {486, 600}
NO_ANSWER = {408, 480, 487}
#: livekit-sip's error when the ring timeout ran out (v1.8.0: `ErrSIPRequestTimeout`, reported
#: as "no-answer"; it carries no SIP status, since we cancelled the INVITE ourselves).
RANG_OUT = "sip request timed out"


class OutboundCallRequest(BaseModel):
    """The request body: whom to call, and why (the agent opens the call with it)."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="E.164 number: + and 3-15 digits")
    purpose: str | None = Field(default=None, min_length=1, max_length=500)

    @field_validator("to")
    @classmethod
    def _number(cls, value: str) -> str:
        if not PHONE_NUMBER.match(value) or not value.startswith("+"):
            raise ValueError("must be an E.164 phone number: + and 3-15 digits, e.g. +15551234567")
        return value

    @field_validator("purpose")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or re.search(r"[\x00-\x1f\x7f]", value)):
            raise ValueError("must be text on one line, without control characters")
        return value


def init_app(app: Flask, settings: Settings) -> None:
    """Register the route (behind `settings.records_keys`)."""
    app.extensions["outbound"] = (settings, KeyRing(settings.records_keys))
    app.register_blueprint(bp)


@bp.post("/outbound")
def place_call() -> tuple[Response, int]:
    """Dial `to` and return once answered: 201 ``{"room_name", "participant_identity",
    "sip_call_id"}``. Errors: see the module docstring and openapi.yaml."""
    settings, keys = current_app.extensions["outbound"]
    if not keys:
        raise ApiError(403, "records_api_disabled", "operator keys are not set: set RECORDS_API_KEYS")
    keys.check(request, "outbound")
    if not settings.telephony.outbound_enabled:
        raise ApiError(403, "outbound_calls_disabled",
                       "outbound calls are off: set SIP_ENABLED=true and SIP_OUTBOUND_ADDRESS")
    try:
        call = OutboundCallRequest.model_validate(read_json_object(request))
    except ValidationError as error:
        raise ApiError(422, "validation_error", describe_request_error(error)) from None
    budgets = current_budgets()
    if budgets is not None:  # a call the budget cannot pay for is not placed
        budgets.check("sip_" + call.to)
    try:
        answer = asyncio.run(dial(settings, call))
    except aiohttp.ClientError as error:
        log.warning("livekit_unreachable", error=type(error).__name__)
        raise ApiError(503, "telephony_unavailable", "LiveKit cannot be reached to place the call",
                       {"Retry-After": "10"}) from None
    log.info("outbound_call_answered", room=answer["room_name"], sip_call_id=answer["sip_call_id"])
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response, 201


async def dial(settings: Settings, call: OutboundCallRequest) -> dict[str, str]:
    """Create the room with the agent dispatched, dial, and wait for the answer.

    Raises:
        ApiError: 409 ``callee_busy`` / ``no_answer`` / ``call_rejected``; 502
            ``trunk_error`` (the provider failed); 503 ``telephony_unavailable``
            (livekit-sip is not running, overloaded, or no outbound trunk is provisioned).
    """
    tel = settings.telephony
    room = f"{ROOM_PREFIX}out-{secrets.token_urlsafe(12)}"
    identity = "sip_" + call.to
    metadata = json.dumps({
        "direction": "outbound", "participant_identity": identity, "phone_number": call.to,
        "purpose": call.purpose, "ring_timeout_s": tel.sip_outbound_ring_timeout_s,
    })
    secret = settings.livekit_api_secret.get_secret_value()
    async with api.LiveKitAPI(tel.api_url, settings.livekit_api_key, secret) as lk:
        trunk_id = await find_outbound_trunk(lk)
        if trunk_id is None:
            raise ApiError(503, "telephony_unavailable", "no outbound trunk is provisioned yet; is telephony running?",
                           {"Retry-After": "10"})
        await lk.room.create_room(api.CreateRoomRequest(
            name=room,
            empty_timeout=settings.room_empty_timeout_seconds + tel.sip_outbound_ring_timeout_s,
            departure_timeout=settings.room_departure_timeout_seconds,
            max_participants=settings.room_max_participants,
            agents=[api.RoomAgentDispatch(agent_name=settings.agent_name, metadata=metadata)],
        ))
        try:
            info = await lk.sip.create_sip_participant(api.CreateSIPParticipantRequest(
                sip_trunk_id=trunk_id,
                sip_call_to=call.to,
                room_name=room,
                participant_identity=identity,
                participant_name=f"Phone {call.to}",
                wait_until_answered=True,
                ringing_timeout=Duration(seconds=tel.sip_outbound_ring_timeout_s),
                max_call_duration=Duration(seconds=tel.sip_max_call_duration_s),
            ))
        except api.TwirpError as error:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            raise refusal(error, tel.sip_outbound_ring_timeout_s) from None
    return {"room_name": room, "participant_identity": info.participant_identity, "sip_call_id": info.sip_call_id}


def refusal(error: api.TwirpError, ring_timeout_s: int) -> ApiError:
    """The API error for a failed dial (`livekit.api.SipCallError` carries the SIP status)."""
    status = getattr(error, "sip_status_code", None)
    phrase = getattr(error, "sip_status", None) or error.message
    said = f" (SIP {status} {phrase})" if status else ""
    log.info("outbound_call_failed", sip_status=status, twirp_code=error.code, message=error.message)
    if status in BUSY:
        return ApiError(409, "callee_busy", f"the callee is busy{said}")
    if status in NO_ANSWER or error.code == "deadline_exceeded" or RANG_OUT in error.message:
        return ApiError(409, "no_answer", f"no answer within {ring_timeout_s} s{said}")
    if status is not None and (400 <= status < 500 or status >= 600):
        return ApiError(409, "call_rejected", f"the call was rejected{said}")
    if status is None and error.code in ("unavailable", "resource_exhausted"):
        return ApiError(503, "telephony_unavailable", f"telephony cannot place calls now: {error.message}",
                        {"Retry-After": "10"})
    return ApiError(502, "trunk_error", f"the SIP provider did not complete the call{said or ': ' + error.message}")

