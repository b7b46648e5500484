"""Gemini Live link faults: the pure retry, backoff and replay logic (no plugin internals).

How a failed handshake is sorted (`classify_connect_error` -> `ConnectFailure`), how long to
wait before the next one (`RetryPolicy`) and the retry loop itself (`open_with_retry`), what a
call is told about its model link (`ModelLinkListener`), what is kept to replay after a
reconnect (`ReplayBuffer`) and how much of it a resumption handle surely covers
(`InFlightWindow`). resilience.py puts these to work through the plugin adapter
(plugin_adapter.py), the one module that touches livekit-plugins-google's internals.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from google.genai import errors as genai_errors
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger("voice_agent.model")
T = TypeVar("T")


class FailureKind(StrEnum):
    """Why a Gemini Live handshake failed, in the caller's and operator's terms."""

    UNREACHABLE = "unreachable"  # refused, DNS, TLS, no answer in time
    AUTH = "auth"  # 401/403 or the key refused at setup
    QUOTA = "quota"  # 429 / RESOURCE_EXHAUSTED
    SERVER = "server"  # 5xx or an internal error during setup
    REJECTED = "rejected"  # anything else the server refused (bad model, bad request)


@dataclass(frozen=True)
class ConnectFailure:
    """A classified handshake failure.

    Attributes:
        kind: what went wrong.
        retryable: whether trying again later can help.
        detail: one line for the log (never the API key).
        retry_after_s: the server's Retry-After, if it sent one.
    """

    kind: FailureKind
    retryable: bool
    detail: str
    retry_after_s: float | None = None


_AUTH_WORDS = re.compile(r"api[ _]key|permission|unauthenticated|unauthori[sz]ed|credential", re.I)
_QUOTA_WORDS = re.compile(r"quota|resource[ _]exhausted|rate limit|too many", re.I)


def classify_connect_error(exc: BaseException) -> ConnectFailure:
    """Sort a handshake error into a :class:`ConnectFailure`.

    Handles what google-genai and websockets raise from ``live.connect``: ``InvalidStatus``
    (HTTP status at the upgrade), ``genai.errors.APIError`` (a close during setup, with
    the WebSocket close code and reason), ``OSError`` (refused, unreachable, TLS) and
    ``TimeoutError`` (no ``setupComplete`` in time).
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        phrase = _status_phrase(status)
        if status in (401, 403):
            return ConnectFailure(FailureKind.AUTH, False, f"HTTP {status} {phrase} at the handshake")
        if status == 429:
            return ConnectFailure(FailureKind.QUOTA, True, f"HTTP 429 {phrase} at the handshake", retry_after)
        if status >= 500:
            return ConnectFailure(FailureKind.SERVER, True, f"HTTP {status} {phrase} at the handshake", retry_after)
        return ConnectFailure(FailureKind.REJECTED, False, f"HTTP {status} {phrase} at the handshake")
    if isinstance(exc, genai_errors.APIError):
        reason = f"{exc.message or exc.status or ''}".strip()
        detail = f"closed during setup with {exc.code}: {reason[:160]}"
        if _QUOTA_WORDS.search(reason):
            return ConnectFailure(FailureKind.QUOTA, True, detail)
        if _AUTH_WORDS.search(reason):
            return ConnectFailure(FailureKind.AUTH, False, detail)
        if exc.code in (1006, 1011, 1012, 1013, 1014) or (isinstance(exc.code, int) and 500 <= exc.code < 600):
            return ConnectFailure(FailureKind.SERVER, True, detail)
        return ConnectFailure(FailureKind.REJECTED, False, detail)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailure(FailureKind.UNREACHABLE, False, f"TLS certificate not trusted: {getattr(exc, 'verify_message', None) or exc}")
    if isinstance(exc, TimeoutError):
        return ConnectFailure(FailureKind.UNREACHABLE, True, "no answer to the handshake in time")
    if isinstance(exc, (OSError, InvalidHandshake, ConnectionClosed)):
        return ConnectFailure(FailureKind.UNREACHABLE, True, f"{type(exc).__name__}: {exc}"[:200])
    return ConnectFailure(FailureKind.REJECTED, False, f"{type(exc).__name__}: {exc}"[:200])


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for handshakes.

    Attributes:
        first_delay_s: wait before the second attempt.
        max_delay_s: the longest wait between attempts.
        quota_min_delay_s: the shortest wait after a quota refusal (429).
        give_up_after_s: stop once this long has passed since the first failure.
        connect_timeout_s: one handshake (TCP, TLS, upgrade, setupComplete) may take this long.
    """

    first_delay_s: float = 0.25
    max_delay_s: float = 8.0
    quota_min_delay_s: float = 4.0
    give_up_after_s: float = 60.0
    connect_timeout_s: float = 10.0

    def delay(self, attempt: int, failure: ConnectFailure) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        delay = min(self.max_delay_s, self.first_delay_s * 2**attempt)
        if failure.kind is FailureKind.QUOTA:
            delay = max(delay, self.quota_min_delay_s)
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, self.give_up_after_s))
        return delay


async def open_with_retry(
    open_once: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_failure: Callable[[ConnectFailure, int, float | None], None],
    before_give_up: Callable[[], Awaitable[None]],
) -> T:
    """Open a connection, retrying failed handshakes with `policy`'s backoff.

    Each attempt (`open_once()`) may take `policy.connect_timeout_s`. A failure is sorted by
    `classify_connect_error`; `on_failure(failure, attempt, retry_in_s)` hears of each one
    (`retry_in_s` None: no retry follows). Giving up (a failure not worth retrying, or
    `policy.give_up_after_s` spent since the first failure) awaits `before_give_up()` first.

    Written with no plugin types so it could be proposed to livekit-plugins-google, whose
    session treats any failed handshake (first or reconnect) as fatal.

    Returns:
        What `open_once` returned.
    Raises:
        ModelUnavailableError: retrying stopped; chained to the last handshake's error.
    """
    attempt = 0
    first_failure_at: float | None = None
    while True:
        try:
            return await asyncio.wait_for(open_once(), policy.connect_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = classify_connect_error(exc)
            now = time.monotonic()
            first_failure_at = first_failure_at if first_failure_at is not None else now
            delay = policy.delay(attempt, failure)
            out_of_time = now - first_failure_at + delay > policy.give_up_after_s
            if not failure.retryable or out_of_time:
                logger.error(
                    "Gemini Live unavailable: %s (%s); giving up after %d attempt(s)",
                    failure.detail, failure.kind, attempt + 1,
                )
                on_failure(failure, attempt, None)
                await before_give_up()
                raise ModelUnavailableError(failure, attempt + 1) from exc
            logger.warning(
                "Gemini Live handshake failed: %s (%s); retry %d in %.1f s",
                failure.detail, failure.kind, attempt + 1, delay,
            )
            on_failure(failure, attempt, delay)
            await asyncio.sleep(delay)
            attempt += 1


class ModelUnavailableError(Exception):
    """Gemini Live could not be reached (or refused us) and retrying stopped."""

    def __init__(self, failure: ConnectFailure, attempts: int) -> None:
        super().__init__(f"Gemini Live unavailable ({failure.kind}): {failure.detail}; {attempts} attempt(s)")
        self.failure = failure
        self.attempts = attempts


class ModelLinkListener(Protocol):
    """What the call wants to know about the model connection. Called on the job's loop."""

    def on_model_connected(self, *, first: bool, replayed_messages: int) -> None:
        """A connection is up (``first``: the call's first one)."""

    def on_model_connection_lost(self, *, reason: str) -> None:
        """The connection dropped or is being replaced (GoAway); a reconnect follows."""

    def on_model_connect_failed(self, failure: ConnectFailure, *, attempt: int, retry_in_s: float | None) -> None:
        """A handshake failed; ``retry_in_s`` is None when no retry follows."""

    # Optional: ``async def before_give_up(self) -> None``, awaited (15 s at most) after the
    # last failed handshake and before the session gives up (say goodbye while it can).


@dataclass
class Sent:
    kind: str  # "realtime_input" | "client_content"
    kwargs: dict[str, Any]
    audio_bytes: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class ReplayBuffer:
    """Client messages sent since the last resumption handle, to replay after a reconnect.

    A handle covers what the server had consumed when it issued it; messages still in
    flight then are not covered. Without Vertex's ``lastConsumedClientMessageIndex`` we
    cannot know which those are: a message sent at time t reached the server by
    t + (one way); the handle, issued then, reached us one way later and was read after
    this loop's lag. So a handle read at time T surely covers only what was sent before
    T - (round trip + loop lag), and the session releases just that, less a margin
    (`InFlightWindow`). A replay may repeat that much audio, usually silence.
    """

    limit_bytes: int
    items: list[Sent] = field(default_factory=list)
    audio_bytes: int = 0

    def add(self, item: Sent) -> None:
        self.items.append(item)
        self.audio_bytes += item.audio_bytes
        while self.audio_bytes > self.limit_bytes and self.items:
            dropped = self.items.pop(0)
            self.audio_bytes -= dropped.audio_bytes

    def take(self) -> list[Sent]:
        items, self.items, self.audio_bytes = self.items, [], 0
        return items

    def clear(self) -> None:
        self.items, self.audio_bytes = [], 0

    def release_before(self, cutoff: float) -> None:
        """Forget what was sent before ``cutoff`` (monotonic s): a handle surely covers it."""
        keep = [item for item in self.items if item.at >= cutoff]
        self.items, self.audio_bytes = keep, sum(item.audio_bytes for item in keep)


class InFlightWindow:
    """How long before now a message may have been sent and still not be covered by a handle
    read now (see `ReplayBuffer`): the worst recent round trip + this loop's lag + a margin.

    Args:
        margin_s: added to round trip and lag (s).
        lag_tick_s: `watch_loop_lag` measures the loop's lag this often (s).
    """

    def __init__(self, margin_s: float = 0.5, lag_tick_s: float = 0.05) -> None:
        self.margin_s = margin_s
        self.lag_tick_s = lag_tick_s
        self.round_trips: deque[float] = deque(maxlen=3)
        self.lag_s = 0.0
        self.last_tick = time.monotonic()

    def note_round_trip(self, seconds: float) -> None:
        """A WebSocket ping's round trip (s)."""
        self.round_trips.append(seconds)

    async def watch_loop_lag(self) -> None:
        """Keep a decaying maximum of how late this event loop runs (s); runs until cancelled."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.lag_tick_s)
            self.last_tick = time.monotonic()
            self.lag_s = max(self.lag_s * 0.9, self.last_tick - before - self.lag_tick_s)

    def seconds(self) -> float:
        """The window now (s): a stalled loop counts from its last tick."""
        lag = max(self.lag_s, time.monotonic() - self.last_tick - self.lag_tick_s)
        return self.margin_s + max(self.round_trips, default=0.0) + lag


def parse_time_left(value: str | None) -> float | None:
    """Seconds in a protobuf Duration string such as ``"5s"`` or ``"59.5s"``; None if unparsable."""
    if not value:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*s?\s*", value)
    return float(match.group(1)) if match else None
