"""Faults the stand-in can be told to inject at the handshake: refusals and stalled setups.

What the real service does at the WebSocket upgrade for a bad key (401/403) or an exhausted
quota (429, optionally with ``Retry-After``), and a hung service (handshakes succeed,
``setupComplete`` never comes). Faults on live sessions (a close, a dropped TCP connection,
``goAway``) are methods of :class:`~.server.GeminiLiveStandin`.
"""

from __future__ import annotations

import threading


class HandshakeFaults:
    """The pending handshake faults, consumed one per connection. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refusal: tuple[int, int | None, float | None] | None = None
        self._stalls: int | None = 0

    def refuse(self, status: int, count: int | None, retry_after_s: float | None) -> None:
        """Refuse the next ``count`` handshakes (all if ``None``) with HTTP ``status``."""
        with self._lock:
            self._refusal = (status, count, retry_after_s)

    def stall(self, count: int | None) -> None:
        """Stall the setup of the next ``count`` connections (all if ``None``)."""
        with self._lock:
            self._stalls = count

    def clear(self) -> None:
        """No more refusals or stalls."""
        with self._lock:
            self._refusal = None
            self._stalls = 0

    def take_refusal(self) -> tuple[int, float | None] | None:
        """Consume one refusal: ``(HTTP status, Retry-After s or None)``, or ``None`` if none is due."""
        with self._lock:
            if self._refusal is None:
                return None
            status, count, retry_after = self._refusal
            if count is not None:
                self._refusal = (status, count - 1, retry_after) if count > 1 else None
            return status, retry_after

    def take_stall(self) -> bool:
        """Consume one stall; ``True`` if this connection's setup is to be stalled."""
        with self._lock:
            if self._stalls == 0:
                return False
            if self._stalls is not None:
                self._stalls -= 1
            return True
