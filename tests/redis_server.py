"""A throw-away redis-server for tests, benches and the fuzzer: one launcher for all of them.

The native stack's own Redis is started from the Procfile (`tests/e2e/harness.py`); this
one is for code that needs a Redis and no stack.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_port


class RedisServer:
    """redis-server on a free loopback port, keeping its files in `directory`; restartable
    (the same port and files), so a test can take Redis away and bring it back.

    Args:
        directory: its working directory (the append-only file, with `persist`).
        persist: append-only persistence on, as the appliance runs it (what was written
            survives `stop` and `start`); off, nothing is written to disk.
    """

    def __init__(self, directory: Path, *, persist: bool = False) -> None:
        self.directory = directory
        self.persist = persist
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start it and wait until it answers ``PING``.

        Raises:
            RuntimeError: redis-server is not on PATH, exited, or did not answer in `timeout_s`.
        """
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH: run the tests with ./scripts/test")
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--appendonly", "yes" if self.persist else "no", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while not self._pong():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM: an append-only file is flushed) and wait for it to exit."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def running_redis(directory: Path, *, persist: bool = False) -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped on exit."""
    server = RedisServer(directory, persist=persist)
    server.start()
    try:
        yield server
    finally:
        server.stop()
