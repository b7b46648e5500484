"""The stand-in's server: a TLS WebSocket server on a background thread, its certificates, the
handshake checks, and the controls tests use (records, faults, life cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from google.genai import types
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .config import StandinConfig
from .faults import HandshakeFaults
from .protocol import PATH_RE
from .recording import Recorder
from .records import RejectedHandshake, SessionRecord
from .session import LiveSession

log = logging.getLogger("gemini_live_standin")
_ws_log = logging.getLogger("gemini_live_standin.websockets")
_ws_log.setLevel(logging.WARNING)  # websockets logs every connection at INFO

CA_FILE_NAME = "gemini-standin-ca.pem"
CA_KEY_FILE_NAME = "gemini-standin-ca.key"


def _load_or_create_ca(cert_dir: Path) -> tuple[trustme.CA, Path]:
    """The stand-in's CA from ``cert_dir``, created on first use.

    Reusing it across restarts keeps clients that loaded the CA file once
    (an agent worker) able to reconnect to a restarted stand-in.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_file, key_file = cert_dir / CA_FILE_NAME, cert_dir / CA_KEY_FILE_NAME
    if ca_file.exists() and key_file.exists():
        return trustme.CA.from_pem(ca_file.read_bytes(), key_file.read_bytes()), ca_file
    ca = trustme.CA(organization_name="Gemini Live stand-in")
    key_file.touch(mode=0o600)
    ca.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


class GeminiLiveStandin:
    """A Gemini Live ``BidiGenerateContent`` server on a background thread.

    Serves ``wss://HOST:PORT/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent``
    with a certificate for ``127.0.0.1``, ``::1`` and ``localhost`` signed by a CA
    written to :attr:`ca_file`. Point google-genai at :attr:`base_url` and trust
    :attr:`ca_file` (see :meth:`http_options`).

    Handshakes to other paths get HTTP 404; handshakes without an
    ``x-goog-api-key`` header (or ``key`` query parameter) get HTTP 401. Any
    non-empty key is accepted.

    Records are kept across :meth:`stop`/:meth:`start` (which also keep the port
    and CA, so a client can reconnect to a "restarted" service).

    Args:
        config: behaviour; defaults to ``StandinConfig()``.
        host: address to bind (127.0.0.1).
        port: TCP port; 0 picks a free one.
        cert_dir: where the CA (``gemini-standin-ca.pem`` and its key) lives; reused
            if present. ``None`` uses a private temporary directory.
    """

    def __init__(
        self,
        config: StandinConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: str | Path | None = None,
    ) -> None:
        self.config = config or StandinConfig()
        self.host = host
        self._port = port
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if cert_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="gemini-standin-")
            cert_dir = self._tempdir.name
        ca, self._ca_file = _load_or_create_ca(Path(cert_dir))
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(self._server_ssl)
        self._recorder = Recorder()
        self._faults = HandshakeFaults()
        self._live: dict[str, tuple[LiveSession, ServerConnection]] = {}
        self._session_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # ---- public: where and how to connect ------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``, for ``HttpOptions.base_url`` or ``GOOGLE_GEMINI_BASE_URL``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "127.0.0.1") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self._port}"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the server certificate."""
        return self._ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts only :attr:`ca_file`."""
        return ssl.create_default_context(cafile=str(self._ca_file))

    def http_options(self, **overrides: Any) -> types.HttpOptions:
        """``HttpOptions`` for ``genai.Client`` or livekit-plugins-google's ``RealtimeModel``.

        google-genai passes ``async_client_args["ssl"]`` to ``websockets.connect``
        (``BaseApiClient._ensure_websocket_ssl_ctx`` / ``AsyncLive.connect``).
        """
        return types.HttpOptions(
            base_url=self.base_url, async_client_args={"ssl": self.ssl_context()}, **overrides
        )

    # ---- public: life cycle ----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Start serving on a background thread; returns :attr:`base_url`."""
        if self._thread is not None:
            raise RuntimeError("stand-in already running")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._thread_main, name="gemini-live-standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("stand-in did not start")
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("stand-in failed to start") from self._start_error
        log.info("Gemini Live stand-in listening on %s (CA %s)", self.base_url, self._ca_file)
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Close all connections (code 1001) and the listening socket; join the thread."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """:meth:`stop`, then remove the temporary certificate directory, if any."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> GeminiLiveStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public: records ---------------------------------------------------------------

    @property
    def sessions(self) -> list[SessionRecord]:
        """Copies of all session records, in connection order."""
        return self._recorder.sessions

    def session(self, index: int = -1) -> SessionRecord:
        """A copy of one session record (default: the latest)."""
        return self._recorder.session(index)

    @property
    def rejected_handshakes(self) -> list[RejectedHandshake]:
        """Handshakes refused with 401/404."""
        return self._recorder.rejected_handshakes

    def errors(self) -> list[tuple[str, str]]:
        """All protocol errors as ``(session_id, message)``."""
        return self._recorder.errors()

    def wait_for(
        self, predicate: Callable[[list[SessionRecord]], object], timeout: float = 10.0
    ) -> list[SessionRecord]:
        """Block until ``predicate(sessions)`` is truthy; return a copy of the sessions.

        ``predicate`` is called with the live records while the stand-in's lock is
        held, each time a record changes: it must only read them, quickly, and keep
        no references. Use the returned copies afterwards.

        Raises:
            TimeoutError: not true within ``timeout`` seconds; the message
                summarises the sessions.
        """
        return self._recorder.wait_for(predicate, timeout)

    # ---- public: faults ----------------------------------------------------------------

    def disconnect(
        self,
        session_id: str | None = None,
        *,
        code: int = 1011,
        reason: str = "stand-in fault",
        abrupt: bool = False,
    ) -> None:
        """Close a live session (default: the latest) with ``code``, or drop TCP if ``abrupt``."""
        _, conn = self._live_session(session_id)

        async def _close() -> None:
            if abrupt:
                conn.transport.abort()
            else:
                await conn.close(code, reason)

        self._run_coroutine(_close())

    def refuse_handshakes(
        self, status: int = 429, *, count: int | None = None, retry_after_s: float | None = None
    ) -> None:
        """Answer the next ``count`` handshakes (every one if ``None``) with HTTP ``status``.

        What the real service does at the WebSocket upgrade for a bad key (401/403) or an
        exhausted quota (429, optionally with ``Retry-After``). Refused handshakes are listed
        in :attr:`rejected_handshakes`; :meth:`accept_handshakes` ends the refusal.
        A refused TCP connection (nothing listening) is :meth:`stop`.
        """
        self._faults.refuse(status, count, retry_after_s)

    def stall_setups(self, *, count: int | None = None) -> None:
        """Accept the next ``count`` connections (all if ``None``), read their setup, never answer.

        A hung service: the TLS and WebSocket handshakes succeed, ``setupComplete`` never
        comes. The session is recorded with ``stalled=True`` and stays open until the
        client gives up. :meth:`accept_handshakes` ends it for new connections.
        """
        self._faults.stall(count)

    def accept_handshakes(self) -> None:
        """Serve new connections normally again (ends :meth:`refuse_handshakes` / :meth:`stall_setups`)."""
        self._faults.clear()

    def send_handle(self, session_id: str | None = None) -> None:
        """Send a live session a ``sessionResumptionUpdate`` now (the real service sends them
        at times of its choosing, also while the user speaks)."""
        live, _ = self._live_session(session_id)
        self._run_coroutine(live.send_resumption_update())

    def go_away(self, session_id: str | None = None, *, time_left_s: float = 5.0) -> None:
        """Send ``goAway{timeLeft}`` to a live session, then close it (1000) when time is up."""
        live, _ = self._live_session(session_id)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(live.go_away(time_left_s), self._loop)

    # ---- internals ----------------------------------------------------------------------

    def _live_session(self, session_id: str | None) -> tuple[LiveSession, ServerConnection]:
        with self._recorder.lock:
            if not self._live:
                raise LookupError("no live session")
            key = session_id or next(reversed(self._live))
            return self._live[key]

    def _run_coroutine(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            raise RuntimeError("stand-in not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start()
            self._start_error = e
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self._port,
            ssl=self._server_ssl,
            process_request=self._process_request,
            compression=None,
            max_size=16 * 2**20,
            logger=_ws_log,
        ) as server:
            self._port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop_event.wait()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        status: http.HTTPStatus | None = None
        if not PATH_RE.match(url.path):
            status = http.HTTPStatus.NOT_FOUND
        elif not (request.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [""])[0]):
            status = http.HTTPStatus.UNAUTHORIZED
        retry_after: float | None = None
        if status is None:
            refusal = self._faults.take_refusal()
            if refusal is None:
                return None
            status, retry_after = http.HTTPStatus(refusal[0]), refusal[1]
        self._recorder.reject(request.path, status.value)
        log.info("refused handshake %s: %d", request.path, status.value)
        response = conn.respond(status, f"{status.value} {status.phrase}\n")
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    async def _handle(self, conn: ServerConnection) -> None:
        request = conn.request
        assert request is not None
        url = urlsplit(request.path)
        match = PATH_RE.match(url.path)
        record = SessionRecord(
            session_id=f"s{next(self._session_ids)}",
            api_version=match.group("version") if match else "",
            api_key=request.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [""])[0],
            headers={k.lower(): v for k, v in request.headers.raw_items()},
            connected_at=time.monotonic(),
            vad_silence_ms=self.config.vad_silence_ms,
        )
        live = LiveSession(conn, self._recorder, record, self.config)
        stall = self._faults.take_stall()
        with self._recorder.mutate():
            self._recorder.add_session(record)
            self._live[record.session_id] = (live, conn)
            record.stalled = stall
        log.info("%s: connected (%s)%s", record.session_id, url.path, " - stalling its setup" if stall else "")
        try:
            if stall:
                await live.stall()
            else:
                await live.run()
        except ConnectionClosed:
            pass  # a close is normal, whatever the code; recorded below
        except Exception as e:
            log.exception("%s: stand-in failure", record.session_id)
            with self._recorder.mutate():
                record.errors.append(f"stand-in failure: {e!r}")
        finally:
            await live.aclose()
            with contextlib.suppress(Exception):
                await conn.close()
            received = conn.close_exc.rcvd if conn.close_exc else None
            sent = conn.close_exc.sent if conn.close_exc else None
            frame = received or sent
            with self._recorder.mutate():
                self._live.pop(record.session_id, None)
                record.closed_at = time.monotonic()
                record.close_code = frame.code if frame else None
                record.close_reason = frame.reason if frame else None
            log.info("%s: closed (%s)", record.session_id, record.close_code)
