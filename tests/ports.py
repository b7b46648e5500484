"""Free loopback ports for the processes tests, benches and the load test start.

Every helper that starts a server on a port of its own takes it from here, so two of
them never pick the same one in one run.
"""

from __future__ import annotations

import os
import random
import socket

#: Where test stacks take their TCP ports: below Linux's ephemeral range (32768-60999), so
#: an outgoing connection cannot take a port between our pick and the service's bind.
TEST_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def _own_ports() -> range:
    """This process's share of `TEST_PORTS`: all of it, or under pytest-xdist (`./scripts/test`
    runs test files in parallel processes, which cannot see each other's `_handed_out`) the
    worker's own slice, so two workers never pick the same port.

    pytest-xdist names its workers in PYTEST_XDIST_WORKER (gw0, gw1, ...) and their number in
    PYTEST_XDIST_WORKER_COUNT.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return TEST_PORTS
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = len(TEST_PORTS) // count
    start = TEST_PORTS.start + int(worker.removeprefix("gw")) * size
    return range(start, start + size)


def free_port(udp: bool = False) -> int:
    """A TCP port in this process's share of `TEST_PORTS` (`_own_ports`) that is free on
    127.0.0.1 right now, never the same twice.

    Args:
        udp: the port must be free for UDP too (SIP listens on both).

    Raises:
        RuntimeError: when 500 random picks were all taken.
    """
    ports = _own_ports()
    for port in random.sample(ports, 500):
        if port in _handed_out:
            continue
        if _bindable(port, socket.SOCK_STREAM) and (not udp or _bindable(port, socket.SOCK_DGRAM)):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port in {ports.start}-{ports.stop - 1}")


def free_udp_range(count: int) -> range:
    """`count` consecutive ports in this process's share of `TEST_PORTS`, free for UDP on
    127.0.0.1 now (RTP media).

    Raises:
        RuntimeError: when 200 random picks were all (partly) taken.
    """
    own = _own_ports()
    for start in random.sample(range(own.start, own.stop - count), 200):
        ports = range(start, start + count)
        if _handed_out.isdisjoint(ports) and all(_bindable(p, socket.SOCK_DGRAM) for p in ports):
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"no {count} free UDP ports in a row in {own.start}-{own.stop - 1}")


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
