"""A real SIP peer for the phone-call tests and the phone benchmark: SIPp, and the RTP it exchanges.

SIPp (Debian's `sip-tester`, `/usr/bin/sipp`) places or answers one call per run of a
scenario: the XML built here spells out each SIP message it sends and each one it expects,
so a wrong or missing answer fails the run (non-zero exit). It streams raw G.711 μ-law
files as RTP (`rtp_stream`) and replays RFC 4733 DTMF packets from a pcap
(`play_pcap_audio`), but keeps nothing it receives: `RtpCapture` records the call's RTP
with tcpdump on the loopback interface, and `RtpCapture.packets` decodes it.

Audio on the wire: PCMU (RTP payload type 0), 8000 Hz, 20 ms (160 bytes) per packet;
DTMF as telephone-event, payload type 101. Everything runs on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.audio import mulaw_decode, mulaw_encode, rms_dbfs

#: G.711 on the phone network: 8 kHz, and PCMU is RTP payload type 0 (RFC 3551).
PHONE_SAMPLE_RATE = 8000
PCMU = 0
#: Samples in one 20 ms PCMU packet.
PACKET_SAMPLES = PHONE_SAMPLE_RATE // 50
#: telephone-event (RFC 4733) as offered in our SDP; the pcaps SIPp ships use it too.
TELEPHONE_EVENT = 101
#: A call with no final answer this long counts as dropped (ms).
DROPPED_AFTER_MS = 6000
#: The caller's phone reports a transfer's outcome (NOTIFY) this long after accepting it (ms).
REFER_NOTIFY_AFTER_MS = 500
#: RFC 4733 DTMF for one key, as SIPp's package ships them (`dtmf_2833_<key>.pcap`).
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_{key}.pcap"

_SDP = """v=0
o=sipp 53655765 2353687637 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv"""


def ulaw_file(path: Path, speech_8k: np.ndarray, lead_s: float, tail_s: float) -> Path:
    """Write `lead_s` s of silence, the speech (int16 at 8 kHz) and `tail_s` s of silence as raw
    μ-law, the format SIPp's `rtp_stream` plays (no header)."""
    silence = np.zeros(int(PHONE_SAMPLE_RATE * lead_s), dtype=np.int16)
    tail = np.zeros(int(PHONE_SAMPLE_RATE * tail_s), dtype=np.int16)
    path.write_bytes(mulaw_encode(np.concatenate([silence, speech_8k, tail])))
    return path


# --- scenarios ----------------------------------------------------------------------------

def _message(text: str) -> str:
    """A SIP message for a scenario: SIPp wants it in CDATA, lines as written."""
    return "<![CDATA[\n" + text.strip("\n") + "\n\n]]>"


def _invite(cseq: int, authenticate: bool) -> str:
    auth = "\n[authentication]" if authenticate else ""
    return f"""
  <send retrans="500">{_message(f'''
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:[$caller]@[local_ip]:[local_port]>
Max-Forwards: 70{auth}
Content-Type: application/sdp
Content-Length: [len]

{_SDP}''')}</send>"""


def _ack_error() -> str:
    """ACK of a non-2xx final answer (same transaction: the answer's Via)."""
    return f"""
  <send>{_message('''
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: [cseq] ACK
Max-Forwards: 70
Content-Length: 0''')}</send>"""


def _in_dialog(method: str, cseq: int, headers: str = "", body: str = "") -> str:
    """A request of ours inside the dialog the INVITE's 200 OK set up (route set recorded)."""
    extra = f"\n{headers.strip()}" if headers else ""
    return f"""
  <send retrans="500">{_message(f'''
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: [$peer]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:[$caller]@[local_ip]:[local_port]>
Max-Forwards: 70{extra}
Content-Length: [len]

{body}''')}</send>"""


def _respond_ok() -> str:
    """200 OK to the request just received (BYE, NOTIFY...)."""
    return f"""
  <send>{_message('''
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0''')}</send>"""


def caller_scenario(
    *,
    audio: Path | None,
    talk_ms: int,
    password: str | None,
    refused_with: int | None = None,
    dtmf: tuple[str, ...] = (),
    dtmf_at_ms: int = 0,
    hang_up: bool = True,
    expect_refer: bool = False,
) -> str:
    """A caller (UAC): INVITE offering PCMU, then what the test needs.

    Args:
        audio: raw μ-law file streamed once after the ACK (see `ulaw_file`); None: silent.
        talk_ms: how long the call stays up after the ACK before we hang up (BYE), or before
            the appliance must have hung up (`hang_up=False`: we wait for its BYE).
        password: answer the 407 digest challenge with it (`-au`/`-ap`); None: expect no challenge.
        refused_with: the call must be refused with this final status (after the challenge,
            when `password` is given); nothing else then happens. 0: wait `DROPPED_AFTER_MS` for
            an answer and fail; `SippRun.final_answers` then tells whether any came (LiveKit
            drops calls from unknown sources without one).
        dtmf: keys sent as RFC 4733 events at `dtmf_at_ms` after the ACK, 600 ms apart.
        expect_refer: wait for the appliance's REFER (a transfer), accept it (202), report
            success (NOTIFY with a `SIP/2.0 200 OK` fragment), then take its BYE.
    """
    steps = [_invite(1, authenticate=False), '\n  <recv response="100" optional="true"/>']
    cseq = 1
    if password is not None:
        steps += ['\n  <recv response="407" auth="true"/>', _ack_error(), _invite(2, authenticate=True),
                  '\n  <recv response="100" optional="true"/>']
        cseq = 2
    if refused_with == 0:
        steps += ['\n  <recv response="180" optional="true"/>',
                  f'\n  <recv response="200" timeout="{DROPPED_AFTER_MS}"/>']
        return _scenario("unanswered call", steps)
    if refused_with is not None:
        steps += [f'\n  <recv response="{refused_with}"/>', _ack_error()]
        return _scenario("refused call", steps)
    steps += [
        '\n  <recv response="180" optional="true"/>',
        '\n  <recv response="183" optional="true"/>',
        '\n  <recv response="200" rrs="true">'
        '<action><ereg regexp=".*" search_in="hdr" header="To:" assign_to="peer"/></action></recv>',
        f"""
  <send>{_message(f'''
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: [$peer]
Call-ID: [call_id]
CSeq: {cseq} ACK
Contact: <sip:[$caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0''')}</send>""",
    ]
    if audio is not None:
        steps.append(f'\n  <nop><action><exec rtp_stream="{audio},1,{PCMU}"/></action></nop>')
    waited = 0
    if dtmf:
        steps.append(f'\n  <pause milliseconds="{dtmf_at_ms}"/>')
        for key in dtmf:
            steps.append(f'\n  <nop><action><exec play_pcap_audio="{DTMF_PCAP.format(key=key)}"/></action></nop>')
            steps.append('\n  <pause milliseconds="600"/>')
        waited = dtmf_at_ms + 600 * len(dtmf)
    if expect_refer:
        timeout = f' timeout="{talk_ms}"'
        steps += [
            f'\n  <recv request="REFER"{timeout}/>',
            f"""
  <send>{_message('''
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[$caller]@[local_ip]:[local_port]>
Content-Length: 0''')}</send>""",
            # A phone reports the transfer's outcome once it has called the target, not in the
            # same instant as its 202.
            f'\n  <pause milliseconds="{REFER_NOTIFY_AFTER_MS}"/>',
            _in_dialog("NOTIFY", cseq + 1, "Event: refer\nSubscription-State: terminated;reason=noresource\n"
                       "Content-Type: message/sipfrag;version=2.0", "SIP/2.0 200 OK"),
            '\n  <recv response="200"/>',
            f'\n  <recv request="BYE" timeout="{talk_ms}"/>',
            _respond_ok(),
        ]
    elif hang_up:
        steps += [f'\n  <pause milliseconds="{max(talk_ms - waited, 0)}"/>', _in_dialog("BYE", cseq + 1),
                  '\n  <recv response="200"/>']
    else:
        steps += [f'\n  <recv request="BYE" timeout="{talk_ms}"/>', _respond_ok()]
    return _scenario("call the appliance", steps)


def callee_scenario(*, answer: int, audio: Path | None = None, talk_ms: int = 0) -> str:
    """A phone being called (UAS), answering the appliance's INVITE with `answer`.

    180 Ringing first, then: 200 OK with our SDP (then the ACK, our audio, and after
    `talk_ms` our BYE); 486 Busy Here (or any final status); or 0: never answering, until
    the appliance gives up and CANCELs (200 to the CANCEL, 487 to the INVITE).
    """
    steps = [
        '\n  <recv request="INVITE" crlf="true"/>',
        f"""
  <send>{_message('''
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Length: 0''')}</send>""",
    ]
    if answer == 0:  # the appliance's ACK of the 487 is not awaited: the call is over for us
        steps += ['\n  <recv request="CANCEL"/>', _respond_ok(), f"""
  <send>{_message('''
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0''')}</send>"""]
        return _scenario("ring, never answer", steps)
    if answer != 200:
        steps += [f"""
  <send>{_message(f'''
SIP/2.0 {answer} Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0''')}</send>""", '\n  <recv request="ACK"/>']
        return _scenario(f"answer {answer}", steps)
    steps += [
        f"""
  <send retrans="500">{_message(f'''
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{_SDP}''')}</send>""",
        '\n  <recv request="ACK" rrs="true" crlf="true">'
        '<action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="peer"/></action></recv>',
    ]
    if audio is not None:
        steps.append(f'\n  <nop><action><exec rtp_stream="{audio},1,{PCMU}"/></action></nop>')
    steps += [f'\n  <pause milliseconds="{talk_ms}"/>', _callee_bye(), '\n  <recv response="200"/>']
    return _scenario("answer and talk", steps)


def _callee_bye() -> str:
    return f"""
  <send retrans="500">{_message('''
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: [$peer]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0''')}</send>"""


def _scenario(name: str, steps: list[str]) -> str:
    body = "".join(steps)
    declare = '\n  <Global variables="caller"/>' if "[$caller]" in body else ""  # SIPp refuses unused ones
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">{declare}{body}\n</scenario>\n'


# --- running SIPp --------------------------------------------------------------------------

@dataclass
class SippRun:
    """One finished SIPp run: its exit status (0: the scenario went as written), and the SIP
    messages it sent and received (`-trace_msg`), for assertions and failure messages."""

    returncode: int
    messages: str
    errors: str

    def final_answers(self) -> list[str]:
        """Status lines of the final responses (2xx-6xx) received to our INVITEs."""
        return [m.split("\n", 1)[0] for m in self.received("SIP/2.0 ")
                if not m.startswith("SIP/2.0 1") and " INVITE" in next(
                    (line for line in m.splitlines() if line.lower().startswith("cseq:")), "")]

    def received(self, method_or_status: str) -> list[str]:
        """The received messages whose first line starts with `method_or_status` (e.g.
        "REFER", "SIP/2.0 407")."""
        found = []
        for block in self.messages.split("----------------------------------------------- ")[1:]:
            _stamp, what, message = (block.split("\n", 2) + ["", ""])[:3]
            if "message received" in what and message.lstrip().startswith(method_or_status):
                found.append(message.strip())
        return found


class Sipp:
    """A SIPp process running one scenario once (`-m 1`), on 127.0.0.x.

    Args:
        workdir: where the scenario and SIPp's logs go.
        scenario: the scenario XML (`caller_scenario`, `callee_scenario`).
        local_ip / sip_port / media_port: where SIPp listens (UDP) and sends media from.
        remote: `host:port` to call (callers); None for a callee.
        service / caller: the called number (request URI user) and ours (From user).
        username / password: digest credentials for `[authentication]`.
        timeout_s: SIPp gives up (and fails) after this long.
    """

    def __init__(
        self,
        workdir: Path,
        scenario: str,
        *,
        local_ip: str,
        sip_port: int,
        media_port: int,
        remote: str | None = None,
        service: str = "service",
        caller: str = "+15550123456",
        username: str = "",
        password: str = "",
        timeout_s: float = 90.0,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.media_port = media_port
        path = workdir / "scenario.xml"
        path.write_text(scenario, encoding="iso-8859-1")
        self.args = [
            "sipp", *([remote] if remote else []), "-sf", str(path), "-m", "1", "-nostdin",
            "-i", local_ip, "-p", str(sip_port), "-mi", local_ip, "-mp", str(media_port),
            "-s", service, *(["-set", "caller", caller] if "[$caller]" in scenario else []),
            "-au", username or "none", "-ap", password or "none",
            "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-recv_timeout", f"{int(timeout_s * 1000)}",
            "-trace_msg", "-message_file", str(workdir / "messages.log"),
            "-trace_err", "-error_file", str(workdir / "errors.log"),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        """Start SIPp in the background (a callee must be listening before it is called)."""
        self.process = subprocess.Popen(self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "wb"))
        time.sleep(0.3)  # bound to its port
        return self

    def wait(self, timeout_s: float = 120.0) -> SippRun:
        """Wait for the run to end; the scenario's outcome and messages.

        Raises:
            subprocess.TimeoutExpired: SIPp did not finish in `timeout_s` seconds (it is killed).
        """
        assert self.process is not None, "start() first"
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        read = lambda name: (self.workdir / name).read_text(errors="replace") if (self.workdir / name).exists() else ""  # noqa: E731
        return SippRun(code, read("messages.log"), read("errors.log") + read("stderr.log"))

    def run(self, timeout_s: float = 120.0) -> SippRun:
        """`start` then `wait`."""
        return self.start().wait(timeout_s)


# --- RTP capture ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet seen on the loopback interface.

    Attributes:
        at: capture time, Unix seconds (tcpdump's clock: the same as `time.time()`).
        sent: sent from the watched port (SIPp's media), else received by it.
        payload_type / sequence / timestamp / ssrc: the RTP header's fields.
        payload: the audio (or telephone-event) bytes.
    """

    at: float
    sent: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


class RtpCapture:
    """tcpdump on `lo` of the UDP traffic to and from `port` (SIPp's media port).

    Use as a context manager around the call; `packets()` afterwards.
    """

    def __init__(self, workdir: Path, port: int) -> None:
        self.path = workdir / f"rtp-{port}.pcap"
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RtpCapture:
        self._process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-U", "-n", "-w", str(self.path), f"udp port {self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert self._process.stderr is not None
        line = self._process.stderr.readline().decode(errors="replace")  # "listening on lo, ..."
        if "listening" not in line:
            self._process.kill()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            time.sleep(0.2)  # the last packets in flight
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)

    def packets(self) -> list[RtpPacket]:
        """The RTP packets captured, in capture order (non-RTP datagrams skipped)."""
        out = []
        for at, src, dst, data in _udp_datagrams(self.path):
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            header = 12 + 4 * (data[0] & 0x0F)
            if data[0] & 0x10 and len(data) >= header + 4:
                header += 4 + 4 * struct.unpack("!H", data[header + 2 : header + 4])[0]
            seq, ts, ssrc = struct.unpack("!HII", data[2:12])
            out.append(RtpPacket(at, src == self.port, data[1] & 0x7F, seq, ts, ssrc, data[header:]))
        return out


def _udp_datagrams(path: Path) -> Iterator[tuple[float, int, int, bytes]]:
    """(time, source port, destination port, payload) of each IPv4 UDP datagram in a pcap file."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack(endian + "I", data[20:24])[0]
    link_header = {1: 14, 113: 16, 276: 20, 0: 4}.get(link)
    if link_header is None:
        raise ValueError(f"unsupported pcap link type {link}")
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, length, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[link_header:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        src, dst, size = struct.unpack("!HHH", udp[:6])
        yield sec + frac / (1e9 if nanos else 1e6), src, dst, udp[8:size]


def audible(packet: RtpPacket, threshold_dbfs: float = -45.0) -> bool:
    """A PCMU packet we received (20 ms) louder than `threshold_dbfs`."""
    return not packet.sent and packet.payload_type == PCMU and rms_dbfs(mulaw_decode(packet.payload)) > threshold_dbfs


def first_audible(packets: list[RtpPacket], after: float, threshold_dbfs: float = -45.0) -> float | None:
    """Capture time of the first received PCMU packet after `after` (Unix s) louder than
    `threshold_dbfs` (a 20 ms packet), or None."""
    return next((p.at for p in packets if p.at > after and audible(p, threshold_dbfs)), None)


def audible_seconds(packets: list[RtpPacket], threshold_dbfs: float = -45.0) -> float:
    """How much of what we received was louder than `threshold_dbfs`, seconds (20 ms packets)."""
    return sum(PACKET_SAMPLES for p in packets if audible(p, threshold_dbfs)) / PHONE_SAMPLE_RATE


@dataclass
class PhoneCallResult:
    """A finished SIPp call: how it went, when it started (Unix s) and its RTP, both ways."""

    run: SippRun
    started_at: float
    packets: list[RtpPacket]

    @property
    def received(self) -> list[RtpPacket]:
        """RTP the appliance sent us (PCMU and anything else), in order."""
        return [p for p in self.packets if not p.sent]

    @property
    def sent(self) -> list[RtpPacket]:
        return [p for p in self.packets if p.sent]

    def sent_at(self, sample: int) -> float:
        """When the PCMU packet carrying sample `sample` (8 kHz, from the stream's start) went out.

        Raises:
            IndexError: the stream never got that far.
        """
        return [p for p in self.sent if p.payload_type == PCMU][sample // PACKET_SAMPLES].at


def place_call(workdir: Path, scenario: str, *, local_ip: str = "127.0.0.1", timeout_s: float = 90.0,
               **sipp: object) -> PhoneCallResult:
    """Run one SIPp scenario from free ports on `local_ip` while capturing its RTP.

    Args:
        sipp: the remaining `Sipp` arguments (remote, service, caller, username, password).
    """
    from tests.ports import free_port

    media_port = free_port(udp=True)
    line = Sipp(workdir, scenario, local_ip=local_ip, sip_port=free_port(udp=True), media_port=media_port,
                timeout_s=timeout_s, **sipp)  # type: ignore[arg-type]
    started = time.time()
    with RtpCapture(workdir, media_port) as capture:
        run = line.run(timeout_s + 30)
    return PhoneCallResult(run, started, capture.packets())
