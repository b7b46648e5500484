"""Phone calls: what the agent does differently when the caller is on a phone line.

livekit-sip bridges each call into its own room as a participant of kind SIP, identity
``sip_<number>``, with attributes set by LiveKit (LiveKit's SIP participant attributes):
``sip.phoneNumber`` (the caller's number, or the callee's on an outbound call),
``sip.trunkPhoneNumber`` (ours), ``sip.callID`` and ``sip.callStatus`` (``dialing``,
``ringing``, ``active``, ``hangup``). Phone audio is 8 kHz G.711 on the wire; livekit-sip
transcodes it to Opus in the room, so the model's audio path is the browser's.

Which calls are phone calls comes from the dispatch metadata, JSON: the token server's
SIP dispatch rule sends ``{"direction": "inbound"}``, its outbound-call API
``{"direction": "outbound", "participant_identity", "phone_number", "purpose",
"ring_timeout_s"}``. For those, `PhoneCall` adds:

* tools: ``end_call`` (livekit-agents' `EndCallTool`: the model says goodbye, then the room
  is deleted, which makes livekit-sip send BYE) and ``transfer_call`` (a SIP REFER to
  `SIP_TRANSFER_TO` through LiveKit's TransferSIPParticipant);
* a greeting for the phone (outbound: with the call's purpose), spoken once answered;
* DTMF: keys the caller presses reach the model as text ("The caller pressed 1 2.").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from livekit import api, rtc
from livekit.agents import AgentSession, RunContext, ToolError, function_tool, get_job_context, llm
from livekit.agents.beta.tools import EndCallTool
from livekit.agents.utils.participant import wait_for_participant_attribute
from voice_calls import logs

logger = logging.getLogger("voice_agent.telephony")

#: LiveKit's SIP participant attributes.
PHONE_NUMBER_ATTRIBUTE = "sip.phoneNumber"
CALL_ID_ATTRIBUTE = logs.SIP_CALL_ID_ATTRIBUTE
CALL_STATUS_ATTRIBUTE = "sip.callStatus"
#: Keys pressed within this long of each other reach the model together (s).
DTMF_GAP_S = 1.0


@dataclass(frozen=True)
class PhoneDispatch:
    """What the dispatch metadata says about a phone call (see the module docstring)."""

    direction: Literal["inbound", "outbound"]
    participant_identity: str | None = None
    phone_number: str | None = None
    purpose: str | None = None
    ring_timeout_s: float = 0.0

    @classmethod
    def parse(cls, metadata: str) -> PhoneDispatch | None:
        """The phone call described by job metadata; None for any other call (a browser's)."""
        try:
            data = json.loads(metadata) if metadata else {}
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("direction") not in ("inbound", "outbound"):
            return None
        return cls(
            direction=data["direction"],
            participant_identity=data.get("participant_identity") or None,
            phone_number=data.get("phone_number") or None,
            purpose=data.get("purpose") or None,
            ring_timeout_s=float(data.get("ring_timeout_s") or 0.0),
        )


def transfer_uri(transfer_to: str) -> str:
    """`SIP_TRANSFER_TO` as a REFER target: SIP and tel URIs as they are, a number as ``tel:``."""
    return transfer_to if transfer_to.startswith(("sip:", "sips:", "tel:")) else f"tel:{transfer_to}"


class PhoneCall:
    """One phone call's extra behaviour (tools, greeting, DTMF), for one job.

    Args:
        dispatch: from `PhoneDispatch.parse`.
        transfer_to: `SIP_TRANSFER_TO`; empty: no ``transfer_call`` tool.
        on_end: called with the reason when the agent ends the call (hung up, transferred),
            before the caller's line drops.
    """

    def __init__(self, dispatch: PhoneDispatch, *, transfer_to: str, on_end: Callable[[str], None]) -> None:
        self.dispatch = dispatch
        self._transfer_to = transfer_to
        self._on_end = on_end
        self._participant: rtc.RemoteParticipant | None = None
        self._digits: list[str] = []
        self._flush: asyncio.TimerHandle | None = None
        self._transferred_to: str | None = None

    def tools(self, before: Callable[[], Awaitable[None]]) -> list[llm.Tool | llm.Toolset]:
        """The phone tools; each first awaits `before` (the greeting guard)."""

        async def on_end_call(_event: llm.Toolset.ToolCalledEvent) -> None:
            await before()
            logger.info("the agent ends the call")
            self._on_end("agent ended the call")

        tools: list[llm.Tool | llm.Toolset] = [EndCallTool(on_tool_called=on_end_call)]
        if self._transfer_to:
            target = transfer_uri(self._transfer_to)

            @function_tool
            async def transfer_call(context: RunContext) -> str:
                """Transfer the caller to a person. Use it when the caller asks for a human, a
                person, an operator or a representative; tell them first, in one short
                sentence, that you are transferring them."""
                await before()
                await context.wait_for_playout()
                return await self._transfer(target)

            tools.append(transfer_call)
        return tools

    async def _transfer(self, target: str) -> str:
        job = get_job_context()
        if self._participant is None:
            raise ToolError("there is no phone caller to transfer")
        if self._transferred_to is not None:
            # The model may call the tool again (another turn) while the first REFER is under
            # way: a second request would fail and must not undo the first.
            return "The caller is already being transferred."
        logger.info("transferring the caller to %s", target)
        self._transferred_to = target  # the line drops as soon as the transfer succeeds
        try:
            await job.api.sip.transfer_sip_participant(api.TransferSIPParticipantRequest(
                room_name=job.room.name, participant_identity=self._participant.identity, transfer_to=target,
            ))
        except api.TwirpError as exc:
            self._transferred_to = None
            logger.warning("transfer to %s failed: %s", target, exc)
            raise ToolError("the transfer failed; apologise and offer to help instead") from exc
        self._on_end(self.left_reason())
        return "The caller has been transferred."

    def left_reason(self) -> str:
        """Why the caller's line dropped: hung up, or transferred by the agent."""
        return f"transferred to {self._transferred_to}" if self._transferred_to else "caller left"

    async def start(self, room: rtc.Room, session: AgentSession, participant: rtc.RemoteParticipant) -> None:
        """The phone participant is in the room: wait until the call is answered (outbound calls
        join while ringing), then pass DTMF keys to the model.

        Raises:
            RuntimeError: the participant left (or the room closed) before answering.
        """
        self._participant = participant
        await wait_for_participant_attribute(
            room, identity=participant.identity, attribute=CALL_STATUS_ATTRIBUTE, value="active"
        )

        @room.on("sip_dtmf_received")
        def _on_dtmf(event: rtc.SipDTMF) -> None:
            if event.participant is None or event.participant.identity != participant.identity:
                return
            self._digits.append(event.digit)
            if self._flush is not None:
                self._flush.cancel()
            self._flush = asyncio.get_running_loop().call_later(DTMF_GAP_S, self._send_digits, session)

    def _send_digits(self, session: AgentSession) -> None:
        digits, self._digits = " ".join(self._digits), []
        logger.info("the caller pressed %s", digits)
        try:
            session.generate_reply(user_input=f"The caller pressed {digits} on the phone's keypad.")
        except RuntimeError as exc:  # the session is closing
            logger.debug("DTMF not passed on: %s", exc)

    def greeting(self) -> str:
        """Instructions for the first thing the agent says on this call."""
        if self.dispatch.direction == "outbound":
            purpose = self.dispatch.purpose or "to offer help"
            return (
                "You placed this phone call and the callee just answered. In one or two short "
                f"sentences: greet them, say you are an automated assistant, and say why you call: {purpose}"
            )
        return "Greet the caller on the phone warmly in one short sentence and offer help."

    @staticmethod
    def describe(participant: rtc.RemoteParticipant) -> dict[str, str]:
        """The caller's phone number and SIP call id, for the call record."""
        attributes = participant.attributes
        return {
            "phone_number": attributes.get(PHONE_NUMBER_ATTRIBUTE, ""),
            "sip_call_id": attributes.get(CALL_ID_ATTRIBUTE, ""),
        }
