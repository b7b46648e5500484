"""``POST /api/livekit/webhook``: LiveKit's room and participant events, verified and
recorded.

livekit-server signs each delivery with the API key and secret: the ``Authorization``
header is a JWT whose ``sha256`` claim is the body's hash. The JWT is verified before the
body is read, so a client without the secret cannot hold a worker by sending a body
slowly; then livekit-api's `WebhookReceiver` checks both. Anything else is 401
``invalid_signature``. livekit-server posts on loopback: the front door does not serve
``/api/livekit/*``.

Recorded (in the session store's event log, see `sessions`): ``room_started``,
``room_finished``, ``participant_joined``, ``participant_left``, each with the room,
the participant identity (when there is one) and LiveKit's event id and time. The last
three also feed the concurrent-session cap: every caller's join (a ``STANDARD``
participant; not the agent, not a phone line) counts under its verified identity, and a
join past the cap has its room deleted at once (a token stays valid after its room
finished, so leave-and-rejoin is refused here). Callers joining and agents leaving also feed
`dispatch_guard` (a caller is never left in a room no agent comes to). Other events are
acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
import structlog
from flask import Blueprint, Flask, current_app, request
from google.protobuf.json_format import ParseError
from livekit import api
from voice_calls import logs

from .dispatch_guard import DispatchGuard, GuardTimes
from .errors import ApiError
from .livekit_admin import RoomAdmin
from .metrics import Metrics, get_metrics
from .sessions import SessionStore
from .settings import Settings

log = structlog.get_logger("token_server")

bp = Blueprint("webhooks", __name__, url_prefix="/api/livekit")

_EXTENSION = "token_server.webhooks"
#: Largest webhook body accepted (bytes): a room or participant record with metadata.
WEBHOOK_MAX_BYTES = 65536
RECORDED_EVENTS = ("room_started", "room_finished", "participant_joined", "participant_left")


def room_deleter(settings: Settings) -> Callable[[str], None]:
    """A function that deletes a room by name through LiveKit's server API (RoomService
    ``DeleteRoom`` at `LIVEKIT_URL`); it raises what livekit-api raises."""
    secret = settings.livekit_api_secret.get_secret_value()

    async def delete(room: str) -> None:
        async with api.LiveKitAPI(settings.telephony.api_url, settings.livekit_api_key, secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    return lambda room: asyncio.run(delete(room))


class WebhookHandler:
    """Verifies deliveries and applies them to `store`.

    `end_call(room)` ends a call whose join went past the identity's cap (default
    `room_deleter`).
    """

    def __init__(self, settings: Settings, store: SessionStore, guard: DispatchGuard | None = None) -> None:
        self._verifier = api.TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        self._receiver = api.WebhookReceiver(self._verifier)
        self._store = store
        self._live_s = settings.token_session_max_seconds
        self._cap = settings.token_max_sessions_per_identity
        self.end_call: Callable[[str], None] = room_deleter(settings)
        self._guard = guard

    def check_signature(self, authorization: str) -> str:
        """The delivery's JWT (the ``Authorization`` header) once its signature verifies,
        without looking at the body.

        Raises:
            ApiError: 401 ``invalid_signature`` (missing, forged or expired).
        """
        token = authorization.removeprefix("Bearer ").strip()
        if not token:
            raise ApiError(401, "invalid_signature", "webhook signature (Authorization) is missing")
        try:
            self._verifier.verify(token)
        except Exception:  # noqa: BLE001 - PyJWT's errors, or livekit-api's bare Exceptions
            raise ApiError(401, "invalid_signature", "webhook signature does not verify") from None
        return token

    def receive(self, body: bytes, token: str) -> api.WebhookEvent:
        """Verify and parse one delivery whose `token` passed `check_signature`.

        Raises:
            ApiError: 401 ``invalid_signature`` (signed for another body);
                400 ``invalid_body`` for a signed body that is not an event.
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_body", "webhook body is not UTF-8") from None
        try:
            return self._receiver.receive(text, token)
        except ParseError:
            raise ApiError(400, "invalid_body", "webhook body is not a LiveKit event") from None
        except Exception:  # noqa: BLE001 - livekit-api raises bare Exceptions for every mismatch
            raise ApiError(401, "invalid_signature", "webhook signature does not verify") from None

    def apply(self, event: api.WebhookEvent) -> None:
        """Record `event` and update the session cap's view of who is in a call."""
        room = event.room.name
        identity = event.participant.identity
        if event.event not in RECORDED_EVENTS:
            return
        if self._guard is not None:
            self._guard.observe(event)
        self._store.record_event(
            {
                "event": event.event,
                "id": event.id,
                "created_at": str(event.created_at),
                "room": room,
                "participant": identity,
            }
        )
        if event.event == "participant_joined" and identity and room:
            if event.participant.kind == api.ParticipantInfo.STANDARD:
                self._joined(identity, room)
        elif event.event == "participant_left" and identity:
            self._store.left(identity, room)
        elif event.event == "room_finished" and room:
            self._store.room_finished(room)

    def _joined(self, identity: str, room: str) -> None:
        if self._store.joined(identity, room, self._live_s, self._cap):
            return
        log.warning("session_cap_enforced", **logs.call_fields(room=room, participant=identity), cap=self._cap)
        try:
            self.end_call(room)
        except Exception as error:  # noqa: BLE001 - livekit-api's TwirpError, aiohttp's errors
            log.error("session_cap_room_not_deleted", room=room, error=str(error))


@bp.post("/webhook")
def livekit_webhook() -> tuple[str, int]:
    """204 once a signed event is recorded."""
    request.max_content_length = WEBHOOK_MAX_BYTES
    handler: WebhookHandler = current_app.extensions[_EXTENSION]
    token = handler.check_signature(request.headers.get("Authorization", ""))
    event = handler.receive(request.get_data(cache=False), token)
    handler.apply(event)
    metrics = get_metrics(current_app)
    if metrics is not None:
        metrics.webhook_events.labels(event=event.event or "unknown").inc()
    log.info("livekit_event", livekit_event=event.event, **logs.call_fields(
        room=event.room.name, participant=event.participant.identity,
        call=event.participant.attributes.get(logs.SIP_CALL_ID_ATTRIBUTE)))
    return "", 204


def init_app(app: Flask, settings: Settings, store: SessionStore) -> None:
    """Register the webhook endpoint on `app` (with the dispatch guard when Redis is set)."""
    app.extensions[_EXTENSION] = WebhookHandler(settings, store, _dispatch_guard(settings, get_metrics(app)))
    app.register_blueprint(bp)


def _dispatch_guard(settings: Settings, metrics: Metrics | None) -> DispatchGuard | None:
    """The guard shares its watch list through Redis; without Redis there is none."""
    url = settings.redis_url.get_secret_value()
    if not url:
        return None
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    admin = RoomAdmin(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
    times = GuardTimes(notice_s=settings.token_no_agent_notice_seconds,
                       join_timeout_s=settings.token_agent_join_timeout_seconds)
    outcome = (lambda name: metrics.calls_without_agent.labels(outcome=name).inc()) if metrics else (lambda _n: None)
    return DispatchGuard(client, admin, settings.agent_name, times, on_outcome=outcome)
