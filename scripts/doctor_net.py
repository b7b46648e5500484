"""The doctor's checks over the network (`scripts/doctor.py`): the model endpoint, the node
address and the media path.

- `check_model`: the Gemini Live setup handshake (google-genai's `live.connect`, which sends
  `setup` and waits for `setupComplete`) with the agent's own endpoint settings
  (`voice_agent.model.build_http_options`), and the clock against the endpoint's `Date`.
- `check_node_ip`: `LIVEKIT_NODE_IP` is an address of one of this machine's interfaces.
- `check_media`: a participant joins a fresh room through livekit-server's signalling, and
  its ICE agent's STUN binding requests to the candidates livekit-server offers must be
  answered over UDP at `LIVEKIT_NODE_IP` (a succeeded candidate pair); TCP `rtc.tcp_port`
  (the fallback when UDP is blocked) must accept connections at that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import psutil
import yaml

from scripts import stack
from scripts.doctor import Finding, failed, passed

#: The clock may differ from the model endpoint's by this much (s): its Date has 1 s steps.
MAX_CLOCK_SKEW_S = 5.0
#: Google's endpoints when GEMINI_BASE_URL is empty (google-genai's defaults).
DEFAULT_MODEL_URLS = {False: "https://generativelanguage.googleapis.com/", True: "https://aiplatform.googleapis.com/"}
#: How long the doctor's participant waits for a succeeded UDP candidate pair after joining (s).
ICE_SETTLE_S = 5.0


def _agent_settings(env: Mapping[str, str]):  # type: ignore[no-untyped-def]
    """The agent's settings object as the agent would build it from `env`."""
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    from voice_agent.settings import AgentSettings

    return AgentSettings()


async def check_model(env: Mapping[str, str], timeout_s: float) -> list[Finding]:
    """The setup handshake with the configured Gemini endpoint, within `timeout_s` seconds,
    and the clock skew against its `Date` header."""
    from google import genai
    from google.genai import types
    from pydantic import ValidationError

    try:
        settings = _agent_settings(env)
        from voice_agent.model import build_http_options

        http_options = build_http_options(settings)
    except (ValidationError, OSError) as exc:
        return [failed("gemini", f"the agent's settings are invalid: {str(exc).splitlines()[0]}",
                       "compare .env with .env.example (GEMINI_*, GOOGLE_*)")]
    if settings.missing_model_credentials():
        return [failed("gemini", "no credentials to try the endpoint with", "set GOOGLE_API_KEY in .env")]
    api_key = settings.google_api_key.get_secret_value() if settings.google_api_key else None
    client = genai.Client(api_key=api_key, vertexai=settings.use_vertexai or None,
                          project=settings.google_cloud_project or None, http_options=http_options)
    endpoint = settings.gemini_base_url or DEFAULT_MODEL_URLS[bool(settings.use_vertexai)]
    config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.aio.live.connect(model=settings.gemini_model, config=config):
                pass
    except TimeoutError:
        handshake = failed("gemini", f"no setupComplete from {endpoint} within {timeout_s:.0f} s",
                           "check this machine's outbound HTTPS (proxy, firewall) to the endpoint")
    except Exception as exc:  # noqa: BLE001 - websockets, google-genai and ssl each raise their own
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        handshake = failed("gemini", f"the Live API setup with {endpoint} failed: {reason}",
                           "check GOOGLE_API_KEY (or Vertex AI credentials), GEMINI_MODEL and GEMINI_BASE_URL")
    else:
        handshake = passed("gemini", f"Live API setup with {endpoint} ({settings.gemini_model}) answered in "
                           f"{time.monotonic() - started:.1f} s")
    return [handshake, await asyncio.to_thread(check_clock, endpoint, http_options)]


def check_clock(endpoint: str, http_options: object) -> Finding:
    """This machine's clock against the `Date` header of any answer from `endpoint`."""
    context = http_options.client_args["verify"]  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(endpoint, timeout=5, context=context) as response:
            date = response.headers.get("Date")
    except urllib.error.HTTPError as exc:  # 404 at the root still has a Date
        date = exc.headers.get("Date")
    except OSError as exc:
        return failed("clock", f"could not ask {endpoint} for the time: {exc}", "see the gemini line above")
    if not date:
        return failed("clock", f"{endpoint} sent no Date header", "compare with a trusted clock by hand")
    skew = (datetime.now(timezone.utc) - parsedate_to_datetime(date)).total_seconds()
    seen = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {endpoint}"
    return passed("clock", seen) if abs(skew) <= MAX_CLOCK_SKEW_S else failed(
        "clock", seen, "turn on time sync (systemctl enable --now systemd-timesyncd, or chrony)")


def local_addresses() -> dict[str, str]:
    """This machine's IP addresses -> the interface each is on."""
    return {a.address.split("%")[0]: name for name, addrs in psutil.net_if_addrs().items()
            for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)}


def check_node_ip(env: Mapping[str, str]) -> Finding:
    """`LIVEKIT_NODE_IP` is where browsers send media: an address of this machine, or the
    public address a cloud provider maps 1:1 onto it."""
    node_ip = env.get("LIVEKIT_NODE_IP", "")
    try:
        address = ipaddress.ip_address(node_ip)
    except ValueError:
        return failed("node-ip", f"LIVEKIT_NODE_IP={node_ip!r} is not an IP address",
                      "set it to this machine's LAN or public IP address in .env")
    local = local_addresses()
    if node_ip in local:
        return passed("node-ip", f"LIVEKIT_NODE_IP={node_ip} is on {local[node_ip]}")
    mine = ", ".join(a for a in local if not ipaddress.ip_address(a).is_link_local)
    if address.is_global:
        return passed("node-ip", f"LIVEKIT_NODE_IP={node_ip} is not on an interface ({mine}): right only for a "
                      "cloud VM whose public address forwards to this one (media-udp below tells)")
    return failed("node-ip", f"LIVEKIT_NODE_IP={node_ip} is not an address of this machine (it has {mine})",
                  "set LIVEKIT_NODE_IP in .env to the address other devices reach this machine at")


def _rtc_ports(env: Mapping[str, str]) -> tuple[int, str]:
    """livekit-server's ICE/TCP port and its UDP media range (`start-end`), as it runs."""
    rtc = yaml.safe_load(stack.LIVEKIT_CONFIG.read_text(encoding="utf-8"))["rtc"]
    tcp = int(env.get("LIVEKIT_RTC_TCP_PORT") or rtc["tcp_port"])
    start = env.get("LIVEKIT_RTC_PORT_RANGE_START") or rtc["port_range_start"]
    end = env.get("LIVEKIT_RTC_PORT_RANGE_END") or rtc["port_range_end"]
    return tcp, f"{start}-{end}"


async def _succeeded_pairs(room: object) -> list[tuple[str, int, str]]:
    """(address, port, protocol) of the remote candidate of every succeeded candidate pair."""
    from livekit.rtc import stats as rtc_stats

    session = await room.get_rtc_stats()  # type: ignore[attr-defined]
    found = []
    reports = [*session.publisher_stats, *session.subscriber_stats]
    remotes = {s.remote_candidate.rtc.id: s.remote_candidate.candidate
               for s in reports if s.WhichOneof("stats") == "remote_candidate"}
    for s in reports:
        if s.WhichOneof("stats") != "candidate_pair":
            continue
        pair = s.candidate_pair.candidate_pair
        if pair.state == rtc_stats.IceCandidatePairState.PAIR_SUCCEEDED and pair.remote_candidate_id in remotes:
            remote = remotes[pair.remote_candidate_id]
            found.append((remote.address, remote.port, remote.protocol.lower()))
    return found


async def check_media(env: Mapping[str, str], timeout_s: float) -> list[Finding]:
    """ICE over UDP through `LIVEKIT_NODE_IP` (a participant's real session with
    livekit-server), and TCP `rtc.tcp_port` open at that address."""
    from livekit import api, rtc

    node_ip = env.get("LIVEKIT_NODE_IP", "")
    tcp_port, udp_range = _rtc_ports(env)
    fix_udp = (f"open UDP {udp_range} to this machine (host firewall, cloud security group), and check "
               f"LIVEKIT_NODE_IP")
    room_name = "doctor-" + secrets.token_hex(4)
    token = (api.AccessToken(env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]).with_identity(room_name)
             .with_grants(api.VideoGrants(room_join=True, room=room_name, can_publish=False)).to_jwt())
    room = rtc.Room()
    findings = []
    try:
        async with asyncio.timeout(timeout_s):
            await room.connect(env["LIVEKIT_URL"], token, rtc.RoomOptions(auto_subscribe=False))
            deadline = time.monotonic() + ICE_SETTLE_S
            while True:
                pairs = await _succeeded_pairs(room)
                if any(a == node_ip and p == "udp" for a, _, p in pairs) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    except (TimeoutError, rtc.ConnectError) as exc:
        findings.append(failed("media-udp", f"no media session through livekit-server at {env['LIVEKIT_URL']} "
                               f"within {timeout_s:.0f} s ({exc or 'timeout'}): ICE found no path to "
                               f"LIVEKIT_NODE_IP={node_ip}", fix_udp))
    else:
        udp = [(a, p) for a, p, proto in pairs if a == node_ip and proto == "udp"]
        if udp:
            findings.append(passed("media-udp", f"ICE (STUN binding) answered over UDP at {node_ip}:{udp[0][1]}"))
        else:
            used = ", ".join(f"{a}:{p}/{proto}" for a, p, proto in pairs) or "none"
            findings.append(failed("media-udp", f"no ICE answer over UDP at {node_ip} (succeeded: {used})", fix_udp))
    finally:
        await room.disconnect()
    try:
        with socket.create_connection((node_ip, tcp_port), timeout=3):
            findings.append(passed("media-tcp", f"{node_ip}:{tcp_port}/tcp accepts connections"))
    except OSError as exc:
        findings.append(failed("media-tcp", f"{node_ip}:{tcp_port}/tcp: {exc.strerror or exc}",
                               f"open TCP {tcp_port} to this machine (ICE over TCP when UDP is blocked)"))
    return findings


async def check_livekit_keys(env: Mapping[str, str], static: Finding) -> Finding:
    """`static` (the keys are set and strong), unless livekit-server refuses them (HTTP 401 on
    its server API); unreachable, the livekit line tells."""
    import aiohttp
    from livekit import api

    url = f"http://127.0.0.1:{env['LIVEKIT_PORT']}"
    client = api.LiveKitAPI(url, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"],
                            timeout=aiohttp.ClientTimeout(total=5))
    try:
        await client.room.list_rooms(api.ListRoomsRequest())
    except api.TwirpError as exc:
        if exc.status in (401, 403):
            return failed("livekit-keys", f"livekit-server refuses LIVEKIT_API_KEY/LIVEKIT_API_SECRET ({exc.status})",
                          "use the keys it was started with: restart ./scripts/run after changing .env")
    except Exception:  # noqa: BLE001 - not answering: check_services reports it
        pass
    finally:
        await client.aclose()
    return static
