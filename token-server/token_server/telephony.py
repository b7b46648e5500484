"""Phone calls through LiveKit SIP: the `SIP_*` settings, and the names of what they provision.

livekit-sip (the Procfile's `sip` process; compose's `telephony` profile) bridges a SIP
trunk (Twilio Elastic SIP Trunking, Telnyx, a PBX) into LiveKit rooms. `sip_provision`
keeps LiveKit's SIP objects in step with these settings; `outbound` places calls through
the outbound trunk. Objects are found by these names:

    inbound trunk   INBOUND_TRUNK_NAME   SIP_INBOUND_NUMBERS, SIP_INBOUND_ALLOWED_ADDRESSES,
                                         SIP_INBOUND_USERNAME / SIP_INBOUND_PASSWORD
    dispatch rule   DISPATCH_RULE_NAME   each call its own room (`ROOM_PREFIX`), the agent
                                         dispatched by name (AGENT_NAME)
    outbound trunk  OUTBOUND_TRUNK_NAME  SIP_OUTBOUND_ADDRESS, SIP_OUTBOUND_NUMBER (caller ID),
                                         SIP_OUTBOUND_USERNAME / SIP_OUTBOUND_PASSWORD
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from livekit import api
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

INBOUND_TRUNK_NAME = "voice-appliance inbound"
OUTBOUND_TRUNK_NAME = "voice-appliance outbound"
DISPATCH_RULE_NAME = "voice-appliance inbound calls"
#: Inbound rooms are `call-_<caller number>_<random>` (LiveKit's individual dispatch rule).
ROOM_PREFIX = "call-"
#: `+` and 3-15 digits (E.164's longest is 15); local extensions of a PBX are digits only.
PHONE_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")
TRANSPORTS = {
    "auto": api.SIPTransport.SIP_TRANSPORT_AUTO,
    "udp": api.SIPTransport.SIP_TRANSPORT_UDP,
    "tcp": api.SIPTransport.SIP_TRANSPORT_TCP,
    "tls": api.SIPTransport.SIP_TRANSPORT_TLS,
}

CommaList = Annotated[list[str], NoDecode]


#: livekit-server on this host at livekit.yaml's port: the default `LIVEKIT_URL` of the token
#: server and of SIP provisioning.
LOCAL_LIVEKIT_URL = "ws://127.0.0.1:7880"


class TelephonySettings(BaseSettings):
    """The `SIP_*` settings (README "Phone calls"); part of the token server's `Settings`.

    Field names are the variables' names in lower case. Values are only checked when
    `sip_enabled` (see `problems`), so a half-written telephony section never stops the
    token server itself.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True, frozen=True)

    #: Run livekit-sip and provision the trunks below (compose: the `telephony` profile).
    sip_enabled: bool = Field(default=False, validation_alias="SIP_ENABLED")
    #: LiveKit's server API as this machine reaches it (`ws://` or `http://`).
    livekit_url: str = Field(default=LOCAL_LIVEKIT_URL, validation_alias="LIVEKIT_URL")
    #: The numbers you own at the provider (E.164, comma-separated); empty accepts any.
    sip_inbound_numbers: CommaList = Field(default_factory=list, validation_alias="SIP_INBOUND_NUMBERS")
    #: The provider's signalling addresses (IPs or CIDRs, comma-separated).
    sip_inbound_allowed_addresses: CommaList = Field(
        default_factory=list, validation_alias="SIP_INBOUND_ALLOWED_ADDRESSES"
    )
    sip_inbound_username: str = Field(default="", validation_alias="SIP_INBOUND_USERNAME")
    sip_inbound_password: SecretStr = Field(default=SecretStr(""), validation_alias="SIP_INBOUND_PASSWORD")
    #: The provider's termination address, `host[:port]` (e.g. `example.pstn.twilio.com`).
    sip_outbound_address: str = Field(default="", validation_alias="SIP_OUTBOUND_ADDRESS")
    #: The caller ID of outbound calls: one of your numbers at the provider.
    sip_outbound_number: str = Field(default="", validation_alias="SIP_OUTBOUND_NUMBER")
    sip_outbound_username: str = Field(default="", validation_alias="SIP_OUTBOUND_USERNAME")
    sip_outbound_password: SecretStr = Field(default=SecretStr(""), validation_alias="SIP_OUTBOUND_PASSWORD")
    #: Signalling transport to the provider: auto, udp, tcp or tls.
    sip_outbound_transport: str = Field(default="auto", validation_alias="SIP_OUTBOUND_TRANSPORT")
    #: An outbound call that rings this long unanswered fails with `no_answer`, seconds.
    sip_outbound_ring_timeout_s: int = Field(default=30, ge=5, le=120, validation_alias="SIP_OUTBOUND_RING_TIMEOUT_S")
    #: Any phone call is hung up after this long, seconds (runaway calls cost money).
    sip_max_call_duration_s: int = Field(default=3600, ge=60, le=86_400, validation_alias="SIP_MAX_CALL_DURATION_S")

    @field_validator("sip_inbound_numbers", "sip_inbound_allowed_addresses", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def outbound_enabled(self) -> bool:
        """Whether outbound calls are configured (telephony on and a termination address)."""
        return self.sip_enabled and bool(self.sip_outbound_address)

    @property
    def api_url(self) -> str:
        """`livekit_url` as the HTTP URL of LiveKit's server API."""
        return re.sub(r"^ws", "http", self.livekit_url)

    def problems(self) -> list[str]:
        """Why telephony must not start with these settings, one line each ([] when fine).

        An inbound trunk with neither allowed addresses nor credentials would let anyone
        who finds the SIP port call the agent (and, through a transfer, the world): it
        is refused outright.
        """
        if not self.sip_enabled:
            return ["SIP_ENABLED is not true: set it in .env to run telephony"]
        problems = []
        has_password = bool(self.sip_inbound_password.get_secret_value())
        if not self.sip_inbound_allowed_addresses and not (self.sip_inbound_username and has_password):
            problems.append(
                "set SIP_INBOUND_ALLOWED_ADDRESSES (your SIP provider's signalling addresses) or "
                "SIP_INBOUND_USERNAME and SIP_INBOUND_PASSWORD: an open SIP port is toll fraud waiting to happen"
            )
        if bool(self.sip_inbound_username) != has_password:
            problems.append("SIP_INBOUND_USERNAME and SIP_INBOUND_PASSWORD go together")
        for address in self.sip_inbound_allowed_addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                problems.append(f"SIP_INBOUND_ALLOWED_ADDRESSES: {address!r} is not an IP address or CIDR range")
        bad = [n for n in self.sip_inbound_numbers if not PHONE_NUMBER.match(n)]
        if bad:
            problems.append(f"SIP_INBOUND_NUMBERS: {', '.join(bad)} not phone numbers (+ and digits)")
        outbound = (self.sip_outbound_number, self.sip_outbound_username)
        if any(outbound) and not self.sip_outbound_address:
            problems.append("SIP_OUTBOUND_NUMBER and SIP_OUTBOUND_USERNAME need SIP_OUTBOUND_ADDRESS")
        if self.sip_outbound_address:
            if not re.match(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$", self.sip_outbound_address):
                problems.append("SIP_OUTBOUND_ADDRESS must be host[:port] (no sip: scheme)")
            if not PHONE_NUMBER.match(self.sip_outbound_number):
                problems.append("SIP_OUTBOUND_NUMBER (the caller ID) must be one of your numbers (+ and digits)")
            if bool(self.sip_outbound_username) != bool(self.sip_outbound_password.get_secret_value()):
                problems.append("SIP_OUTBOUND_USERNAME and SIP_OUTBOUND_PASSWORD go together")
        if self.sip_outbound_transport not in TRANSPORTS:
            problems.append(f"SIP_OUTBOUND_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
        return problems


async def find_outbound_trunk(lk: api.LiveKitAPI) -> str | None:
    """The id of the appliance's outbound trunk, or None when none is provisioned."""
    listing = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
    return next((t.sip_trunk_id for t in listing.items if t.name == OUTBOUND_TRUNK_NAME), None)
