"""Provision LiveKit's SIP trunks and dispatch rule from the settings, idempotently.

At every start of telephony, each object `telephony` names is found by its name and
updated in place, or created once; duplicates of a name are deleted, and so is an outbound
trunk the settings no longer describe. So `.env` stays the one place to configure phone
calls, and a restart never piles up trunks or rules.

``python -m token_server.sip_provision`` checks the settings (a refused configuration is
one line on stderr and exit status 2), waits for LiveKit's API, provisions, and prints the
ids. The native run runs it just before livekit-sip (the Procfile's `sip` line); compose
runs it as the one-shot service `sip-provision`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit import api

from .telephony import (
    DISPATCH_RULE_NAME,
    INBOUND_TRUNK_NAME,
    OUTBOUND_TRUNK_NAME,
    ROOM_PREFIX,
    TRANSPORTS,
    TelephonySettings,
)

if TYPE_CHECKING:
    from .settings import Settings

#: Exit status when the settings are refused.
CONFIG_REFUSED_EXIT_CODE = 2


@dataclass(frozen=True)
class Provisioned:
    """The ids of what `provision` left in LiveKit (`outbound_trunk_id` None: no outbound)."""

    inbound_trunk_id: str
    dispatch_rule_id: str
    outbound_trunk_id: str | None


def inbound_trunk(tel: TelephonySettings) -> api.SIPInboundTrunkInfo:
    """The inbound trunk the settings describe (LiveKit checks address, number and digest)."""
    return api.SIPInboundTrunkInfo(
        name=INBOUND_TRUNK_NAME,
        numbers=tel.sip_inbound_numbers,
        allowed_addresses=tel.sip_inbound_allowed_addresses,
        auth_username=tel.sip_inbound_username,
        auth_password=tel.sip_inbound_password.get_secret_value(),
        max_call_duration=Duration(seconds=tel.sip_max_call_duration_s),
    )


def dispatch_rule(trunk_id: str, agent_name: str, departure_timeout_s: int, max_participants: int) -> api.SIPDispatchRuleInfo:
    """Each call on `trunk_id` in its own room (`ROOM_PREFIX`), with the agent dispatched.

    The dispatch metadata is JSON ``{"direction": "inbound"}``; who called comes from the
    SIP participant's ``sip.*`` attributes. Timeouts in seconds.
    """
    room = api.RoomConfiguration(
        departure_timeout=departure_timeout_s,
        max_participants=max_participants,
        agents=[api.RoomAgentDispatch(agent_name=agent_name, metadata=json.dumps({"direction": "inbound"}))],
    )
    return api.SIPDispatchRuleInfo(
        name=DISPATCH_RULE_NAME,
        trunk_ids=[trunk_id],
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=ROOM_PREFIX)),
        room_config=room,
    )


def outbound_trunk(tel: TelephonySettings) -> api.SIPOutboundTrunkInfo:
    """The outbound trunk the settings describe (calls out through the provider)."""
    return api.SIPOutboundTrunkInfo(
        name=OUTBOUND_TRUNK_NAME,
        address=tel.sip_outbound_address,
        numbers=[tel.sip_outbound_number],
        transport=TRANSPORTS[tel.sip_outbound_transport],
        auth_username=tel.sip_outbound_username,
        auth_password=tel.sip_outbound_password.get_secret_value(),
    )


async def provision(lk: api.LiveKitAPI, settings: Settings) -> Provisioned:
    """Make LiveKit's SIP trunks and dispatch rule match `settings.telephony` (create or update).

    Objects are matched by name; extra objects of the same name (left by a crash between
    create and a later run) are deleted, so there is exactly one of each afterwards.

    Raises:
        livekit.api.TwirpError: LiveKit refused a request (e.g. a rule conflicting with
            one created by hand for the same numbers).
    """
    tel = settings.telephony
    inbound = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    mine = [t.sip_trunk_id for t in inbound.items if t.name == INBOUND_TRUNK_NAME]
    if mine:
        trunk_id = (await lk.sip.update_inbound_trunk(mine[0], inbound_trunk(tel))).sip_trunk_id
    else:
        trunk_id = (await lk.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(trunk=inbound_trunk(tel)))).sip_trunk_id
    for extra in mine[1:]:
        await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=extra))

    rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
    mine = [r.sip_dispatch_rule_id for r in rules.items if r.name == DISPATCH_RULE_NAME]
    for extra in mine[1:]:
        await lk.sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=extra))
    rule = dispatch_rule(trunk_id, settings.agent_name, settings.room_departure_timeout_seconds,
                         settings.room_max_participants)
    if mine:
        rule_id = (await lk.sip.update_dispatch_rule(mine[0], rule)).sip_dispatch_rule_id
    else:
        rule_id = (await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(dispatch_rule=rule))).sip_dispatch_rule_id

    outbound = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
    mine = [t.sip_trunk_id for t in outbound.items if t.name == OUTBOUND_TRUNK_NAME]
    outbound_id: str | None = None
    if tel.sip_outbound_address:
        if mine:
            outbound_id = (await lk.sip.update_outbound_trunk(mine[0], outbound_trunk(tel))).sip_trunk_id
        else:
            outbound_id = (await lk.sip.create_outbound_trunk(
                api.CreateSIPOutboundTrunkRequest(trunk=outbound_trunk(tel)))).sip_trunk_id
        mine = mine[1:]
    for extra in mine:
        await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=extra))
    return Provisioned(trunk_id, rule_id, outbound_id)


async def provision_when_ready(settings: Settings, timeout_s: float = 120.0) -> Provisioned:
    """`provision`, retried while LiveKit's API cannot be reached yet (it may still be starting).

    Raises:
        TimeoutError: LiveKit did not answer within `timeout_s` seconds.
        livekit.api.TwirpError: LiveKit refused a request.
    """
    url = settings.telephony.api_url
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with api.LiveKitAPI(url, settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()) as lk:
                return await provision(lk, settings)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"LiveKit's API at {url} did not answer within {timeout_s:.0f} s") from exc
            await asyncio.sleep(1.0)


def main() -> int:
    """`python -m token_server.sip_provision`: check the settings, then provision (see module doc)."""
    from .settings import load_settings_or_exit

    settings = load_settings_or_exit()
    problems = settings.telephony.problems()
    if problems:
        print(f"telephony: configuration refused: {'; '.join(problems)}", file=sys.stderr)
        return CONFIG_REFUSED_EXIT_CODE
    try:
        done = asyncio.run(provision_when_ready(settings))
    except (TimeoutError, api.TwirpError) as exc:
        print(f"telephony: provisioning failed: {exc}", file=sys.stderr)
        return 1
    print(f"telephony: inbound trunk {done.inbound_trunk_id}, dispatch rule {done.dispatch_rule_id}, "
          f"outbound trunk {done.outbound_trunk_id or '(none: SIP_OUTBOUND_ADDRESS is empty)'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
