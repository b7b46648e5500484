"""`./scripts/doctor`'s checks that need no running appliance: keys, node address, TLS, disk.

The TLS checks talk to a real TLS server on this machine's own non-loopback address, with
certificates made for each case (wrong name, expiring soon).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scripts import doctor, doctor_net
from tests.redis_server import running_redis
from voice_calls import admission

STRONG = "k" * 40


def keys_env(**values: str) -> dict[str, str]:
    return {"LIVEKIT_API_KEY": "APIabc", "LIVEKIT_API_SECRET": "s" * 40, "AGENT_WORKERS": "1",
            "AGENT_HEALTH_PORT": "8081", "GOOGLE_API_KEY": "g", **values}


def by_check(findings: list[doctor.Finding]) -> dict[str, doctor.Finding]:
    return {f.check: f for f in findings}


def test_keys_pass_when_set_and_strong() -> None:
    findings = doctor.check_keys(keys_env(RECORDS_API_KEYS=f"{STRONG},{STRONG}x"))
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert [f.line() for f in findings] == [
        "✓ livekit-keys: LIVEKIT_API_KEY set, LIVEKIT_API_SECRET strong",
        "✓ gemini-credentials: GOOGLE_API_KEY set",
    ]


def test_a_weak_secret_a_short_bearer_key_and_no_gemini_credentials_each_fail_with_the_fix() -> None:
    found = by_check(doctor.check_keys(keys_env(LIVEKIT_API_SECRET="secret", GOOGLE_API_KEY="",
                                                TOKEN_SHARED_KEYS=f"{STRONG},short")))
    assert found["livekit-keys"].line() == (
        "✗ livekit-keys: LIVEKIT_API_SECRET must be at least 32 random characters — fix: run "
        "./scripts/init-env, or set them in .env")
    assert found["token-shared-keys"].line() == (
        "✗ token-shared-keys: key 2 of 2 is shorter than 32 characters — fix: replace it with "
        "`openssl rand -base64 36` in .env (TOKEN_SHARED_KEYS)")
    assert not found["gemini-credentials"].ok
    assert "set GOOGLE_API_KEY in .env" in found["gemini-credentials"].line()


def lan_address() -> str:
    """A non-loopback IPv4 address of this machine."""
    for address in doctor_net.local_addresses():
        ip = ipaddress.ip_address(address)
        if ip.version == 4 and not ip.is_loopback and not ip.is_link_local:
            return address
    pytest.skip("this machine has no non-loopback IPv4 address")


def test_node_ip_must_be_an_address_of_this_machine() -> None:
    assert doctor_net.check_node_ip({"LIVEKIT_NODE_IP": "127.0.0.1"}).line() == "✓ node-ip: LIVEKIT_NODE_IP=127.0.0.1 is on lo"
    ip = lan_address()
    assert doctor_net.check_node_ip({"LIVEKIT_NODE_IP": ip}).ok
    wrong = doctor_net.check_node_ip({"LIVEKIT_NODE_IP": "10.255.255.254"})
    assert not wrong.ok and wrong.line().startswith(
        "✗ node-ip: LIVEKIT_NODE_IP=10.255.255.254 is not an address of this machine (it has ")
    assert ip in wrong.seen and wrong.fix.startswith("set LIVEKIT_NODE_IP in .env")
    # A public address not on an interface: the cloud case, explained, left to the media check.
    cloud = doctor_net.check_node_ip({"LIVEKIT_NODE_IP": "8.8.8.8"})
    assert cloud.ok and "cloud VM whose public address forwards to this one" in cloud.seen
    assert not doctor_net.check_node_ip({"LIVEKIT_NODE_IP": "voice.example.org"}).ok


def make_cert(tmp_path: Path, names: list[str], days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days, hours=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[callable]:
    """Serve TLS on this machine's LAN address with a certificate for `names`, valid `days`."""
    sockets: list[socket.socket] = []

    def serve(names: list[str], days: int) -> dict[str, str]:
        cert_file, key_file = make_cert(tmp_path, names, days)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        host = lan_address()
        listener = socket.create_server((host, 0))
        sockets.append(listener)

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                try:
                    with context.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

        threading.Thread(target=accept, daemon=True).start()
        return {"PUBLIC_HOST": host, "HTTPS_PORT": str(listener.getsockname()[1])}

    yield serve
    for listener in sockets:
        listener.close()


def test_tls_passes_for_a_certificate_that_covers_the_host_and_lasts(tls_server) -> None:
    env = tls_server([lan_address()], days=90)
    finding = doctor.check_tls(env)
    assert finding.line() == f"✓ tls: certificate for {env['PUBLIC_HOST']} valid 90 more days"


def test_tls_fails_for_a_certificate_expiring_within_14_days(tls_server) -> None:
    env = tls_server([lan_address()], days=5)
    finding = doctor.check_tls(env)
    assert finding.line().startswith(f"✗ tls: the certificate for {env['PUBLIC_HOST']} expires in 5 days — fix: renew it")


def test_tls_fails_for_a_certificate_of_another_name(tls_server) -> None:
    env = tls_server(["voice.example.org", "*.example.net"], days=90)
    finding = doctor.check_tls(env)
    assert finding.line().startswith(
        f"✗ tls: the certificate on {env['PUBLIC_HOST']}:{env['HTTPS_PORT']} is for voice.example.org, "
        f"*.example.net, not {env['PUBLIC_HOST']} — fix: ")


def test_tls_fails_when_nothing_serves_https() -> None:
    with socket.socket() as sock:
        sock.bind((lan_address(), 0))
        port = sock.getsockname()[1]
    finding = doctor.check_tls({"PUBLIC_HOST": lan_address(), "HTTPS_PORT": str(port)})
    assert not finding.ok and finding.seen.startswith(f"no TLS on {lan_address()}:{port}: ")


def test_loopback_public_host_is_a_secure_origin_for_this_machine_only() -> None:
    finding = doctor.check_tls({"PUBLIC_HOST": "localhost"})
    assert finding.ok and "for a browser on this machine only" in finding.seen


def test_certificate_name_matching() -> None:
    assert doctor.ssl_match("*.example.org", "voice.example.org")
    assert not doctor.ssl_match("*.example.org", "a.voice.example.org")
    assert not doctor.ssl_match("*.example.org", "example.org")
    assert doctor.ssl_match("Voice.Example.org.", "voice.example.org")


def test_disk_space_is_read_under_the_state_dir(tmp_path: Path) -> None:
    finding = doctor.check_disk({"STATE_DIR": str(tmp_path / "not-yet" / "state")})
    assert finding.check == "disk" and f"GiB free under {tmp_path}" in finding.seen


def test_compose_agent_workers_count_once_registered_and_not_draining(tmp_path: Path) -> None:
    """In compose the doctor cannot read the workers' ready files (they are in their
    containers): it counts the capacity they publish in Redis once LiveKit registered them."""
    with running_redis(tmp_path) as server:
        env = {"REDIS_URL": server.url}
        assert doctor.registered_workers(env) == 0
        client = redis.Redis.from_url(server.url, decode_responses=True)
        for worker, draining in (("host-1", False), ("host-2", True), ("host-3", False)):
            client.eval(admission.PUBLISH, 2, admission.WORKERS, admission.worker_key(worker), worker,
                        admission.WorkerCapacity(max_calls=4, draining=draining).to_json(), 60_000)
        assert doctor.registered_workers(env) == 2
        client.delete(admission.worker_key("host-3"))  # its key expired: the worker is gone
        assert doctor.registered_workers(env) == 1
    assert doctor.registered_workers(env) == 0  # Redis gone: none can be seen
