"""The stand-in's store of records, shared by its server thread and the tests that read it.

Every change to a record is made inside :meth:`Recorder.mutate`, which wakes
:meth:`Recorder.wait_for`; readers get copies (:meth:`SessionRecord.snapshot`).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator

from .records import RejectedHandshake, ResumptionRecord, SessionRecord


class Recorder:
    """Session records, refused handshakes and the resumption handles issued, behind one lock.

    Records are kept for the stand-in's lifetime, across its stops and starts.
    """

    def __init__(self) -> None:
        #: The lock; a :class:`threading.Condition` notified on every change.
        self.lock = threading.Condition()
        self._sessions: list[SessionRecord] = []
        self._rejected: list[RejectedHandshake] = []
        self._handles: dict[str, tuple[str, int]] = {}

    @contextlib.contextmanager
    def mutate(self) -> Iterator[None]:
        """Hold the lock while changing records, then wake every :meth:`wait_for`."""
        with self.lock:
            yield
            self.lock.notify_all()

    def add_session(self, record: SessionRecord) -> None:
        """Keep a new connection's record (call inside :meth:`mutate`)."""
        self._sessions.append(record)

    def reject(self, path: str, status: int) -> None:
        """Record a refused handshake: its path (with query) and HTTP status."""
        with self.mutate():
            self._rejected.append(RejectedHandshake(time.monotonic(), path, status))

    @property
    def sessions(self) -> list[SessionRecord]:
        """Copies of all session records, in connection order."""
        with self.lock:
            return [s.snapshot() for s in self._sessions]

    def session(self, index: int = -1) -> SessionRecord:
        """A copy of one session record (default: the latest)."""
        with self.lock:
            return self._sessions[index].snapshot()

    @property
    def rejected_handshakes(self) -> list[RejectedHandshake]:
        """Handshakes refused, in order."""
        with self.lock:
            return list(self._rejected)

    def errors(self) -> list[tuple[str, str]]:
        """All protocol errors as ``(session_id, message)``."""
        with self.lock:
            return [(s.session_id, e) for s in self._sessions for e in s.errors]

    def wait_for(
        self, predicate: Callable[[list[SessionRecord]], object], timeout: float = 10.0
    ) -> list[SessionRecord]:
        """Block until ``predicate(sessions)`` is truthy; return a copy of the sessions.

        ``predicate`` is called with the live records while the lock is held, each time a
        record changes: it must only read them, quickly, and keep no references. Use the
        returned copies afterwards.

        Raises:
            TimeoutError: not true within ``timeout`` seconds; the message
                summarises the sessions.
        """
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self._sessions):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; {self._summary()}")
                self.lock.wait(remaining)
            return [s.snapshot() for s in self._sessions]

    def issue_handle(self, record: SessionRecord) -> str:
        """A new resumption handle for ``record``'s session, remembered with its turn count."""
        handle = f"standin-{record.session_id}-{len(record.handles) + 1}-{secrets.token_hex(6)}"
        with self.mutate():
            self._handles[handle] = (record.session_id, len(record.turns))
            record.handles.append(handle)
            record.handle_audio_bytes.append(len(record.input_audio))
        return handle

    def lookup_handle(self, handle: str) -> ResumptionRecord:
        """What a setup's ``sessionResumption.handle`` refers to (unknown handles too)."""
        with self.lock:
            issued = self._handles.get(handle)
        if issued is None:
            return ResumptionRecord(handle, False, None)
        return ResumptionRecord(handle, True, issued[0], issued[1])

    def _summary(self) -> str:
        if not self._sessions:
            return "no sessions"
        return "; ".join(
            f"{s.session_id}: setup={'yes' if s.setup else 'no'} audio={s.input_audio_ms:.0f}ms "
            f"turns={[(t.kind, t.reply_text, t.interrupted) for t in s.turns]} "
            f"tool_calls={len(s.tool_calls)} closed={s.close_code} errors={s.errors}"
            for s in self._sessions
        )
