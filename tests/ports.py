"""Free loopback ports for the processes tests, benches and the load test start.

Every helper that starts a server on a port of its own takes it from here, so two of
them never pick the same one in one run.
"""

from __future__ import annotations

import random
import socket

#: Where test stacks take their TCP ports: below Linux's ephemeral range (32768-60999), so
#: an outgoing connection cannot take a port between our pick and the service's bind.
TEST_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port(udp: bool = False) -> int:
    """A TCP port in `TEST_PORTS` that is free on 127.0.0.1 right now, never the same twice.

    Args:
        udp: the port must be free for UDP too (SIP listens on both).

    Raises:
        RuntimeError: when 500 random picks were all taken.
    """
    for port in random.sample(TEST_PORTS, 500):
        if port in _handed_out:
            continue
        if _bindable(port, socket.SOCK_STREAM) and (not udp or _bindable(port, socket.SOCK_DGRAM)):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port in {TEST_PORTS.start}-{TEST_PORTS.stop - 1}")


def free_udp_range(count: int) -> range:
    """`count` consecutive ports in `TEST_PORTS`, free for UDP on 127.0.0.1 now (RTP media).

    Raises:
        RuntimeError: when 200 random picks were all (partly) taken.
    """
    for start in random.sample(range(TEST_PORTS.start, TEST_PORTS.stop - count), 200):
        ports = range(start, start + count)
        if _handed_out.isdisjoint(ports) and all(_bindable(p, socket.SOCK_DGRAM) for p in ports):
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"no {count} free UDP ports in a row in {TEST_PORTS.start}-{TEST_PORTS.stop - 1}")


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
