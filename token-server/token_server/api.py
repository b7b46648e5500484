"""The HTTP API: ``POST /api/token`` (LiveKit's standard token endpoint) and
``GET /api/openapi.yaml``.

A token request goes through, in order: the per-address rate limit, authentication
(`auth`), the body, the per-identity rate limit, the concurrent-session cap
(`sessions`), admission (`admission`: is there an agent for one more call?), then minting
(`tokens`). Each step refuses with its own JSON error.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import structlog
from flask import Blueprint, Flask, Request, Response, current_app, jsonify, request
from pydantic import ValidationError
from voice_calls import logs

from .admission import AdmissionControl
from .budgets import Budgets
from .auth import IDENTITY_HEADER, Authenticator
from .errors import ApiError
from .metrics import get_metrics
from .ratelimit import get_limits
from .schemas import (
    SERVER_CHOSEN_FIELDS,
    RequestLimits,
    TokenRequest,
    describe_request_error,
    describe_server_chosen,
    server_chosen_fields,
)
from .sessions import SessionStore
from .settings import Settings
from .tokens import mint_token, new_identity, new_room_name

log = structlog.get_logger("token_server")

bp = Blueprint("api", __name__, url_prefix="/api")

_SETTINGS = "token_server.settings"
_AUTH = "token_server.auth"
_STORE = "token_server.sessions"
_ADMISSION = "token_server.admission"
_BUDGETS = "token_server.budgets"
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def init_app(
    app: Flask,
    settings: Settings,
    authenticator: Authenticator,
    store: SessionStore,
    admission: AdmissionControl | None = None,
    budgets: Budgets | None = None,
) -> None:
    """Attach `settings`, the authenticator, the session store and admission control (None:
    every call is admitted); register the blueprint."""
    app.extensions[_SETTINGS] = settings
    app.extensions[_AUTH] = authenticator
    app.extensions[_STORE] = store
    app.extensions[_ADMISSION] = admission
    app.extensions[_BUDGETS] = budgets
    app.config["MAX_CONTENT_LENGTH"] = settings.token_max_request_bytes
    app.register_blueprint(bp)


def _settings() -> Settings:
    settings: Settings = current_app.extensions[_SETTINGS]
    return settings


def server_url_for(settings: Settings, req: Request) -> str:
    """The ``server_url`` for this request.

    `LIVEKIT_PUBLIC_URL` when set; otherwise ``wss://`` (``ws://``) + the request's
    Host, choosing by ``X-Forwarded-Proto`` (first value) or the request's scheme.

    Raises:
        ApiError: 400 ``invalid_host`` when the Host header is not a host[:port].
    """
    if settings.livekit_public_url:
        return settings.livekit_public_url
    forwarded = req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in {"http", "https"} else req.scheme
    host = req.host
    if not _HOST.match(host):
        raise ApiError(400, "invalid_host", "Host header is not a valid host[:port]")
    return ("wss://" if scheme == "https" else "ws://") + host


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ApiError(400, "malformed_json", f"duplicate key {key!r} in JSON object")
        result[key] = value
    return result


def current_budgets() -> Budgets | None:
    """This app's budgets (`budgets.create_budgets`), None when no cap is set."""
    budgets: Budgets | None = current_app.extensions[_BUDGETS]
    return budgets


def read_json_object(req: Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body counts as ``{}``.

    Raises:
        ApiError: 415 ``unsupported_media_type`` unless Content-Type is application/json;
            400 ``malformed_json`` for unparsable JSON (or duplicate keys);
            400 ``invalid_body`` when the JSON is not an object.
        werkzeug.exceptions.RequestEntityTooLarge: body over ``MAX_CONTENT_LENGTH`` (413).
    """
    if req.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    raw = req.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, object_pairs_hook=_refuse_duplicates)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    return data


def parse_token_request(
    data: dict[str, Any], limits: RequestLimits, identity_from_body: bool = True, agent_name: str = ""
) -> TokenRequest:
    """Validate a request body.

    Args:
        identity_from_body: False outside open mode, where the identity comes from the
            verified credential and ``participant_identity`` is refused.
        agent_name: this appliance's agent (`AGENT_NAME`): a ``room_config`` that asks for it
            and nothing else is accepted and ignored, since the server dispatches it anyway.

    Raises:
        ApiError: 403 ``field_not_allowed`` for ``room_name`` / any other ``room_config``
            (and ``participant_identity`` when not `identity_from_body`);
            422 ``validation_error`` (one message naming every bad field) otherwise.
    """
    refused = server_chosen_fields(data, agent_name)
    if refused:
        raise ApiError(403, "field_not_allowed", describe_server_chosen(refused, agent_name))
    if not identity_from_body and data.get("participant_identity") is not None:
        raise ApiError(
            403,
            "field_not_allowed",
            "participant_identity: taken from the verified credentials (ID token subject, or "
            f"the {IDENTITY_HEADER} header from a backend holding an API key), never from the body",
        )
    body = {key: value for key, value in data.items() if key not in SERVER_CHOSEN_FIELDS}
    try:
        return TokenRequest.model_validate(body, context={"limits": limits})
    except ValidationError as error:
        raise ApiError(422, "validation_error", describe_request_error(error)) from None


@bp.post("/token")
def issue_token() -> tuple[Response, int]:
    """Mint a join token for a fresh room with the agent dispatched.

    201 ``{"server_url", "participant_token", "room_name", "participant_identity",
    "publish_sources" [, "participant_name"]}``; errors as in `errors`.
    """
    settings = _settings()
    limits = get_limits()
    limits.check_address(request.remote_addr or "unknown")
    authenticator: Authenticator = current_app.extensions[_AUTH]
    caller = authenticator.authenticate(request)
    token_request = parse_token_request(
        read_json_object(request),
        RequestLimits.from_settings(settings),
        identity_from_body=caller.identity is None,
        agent_name=settings.agent_name,
    )
    chosen = caller.identity or token_request.participant_identity
    if chosen is not None:
        limits.check_identity(chosen)
    identity = chosen or new_identity()
    server_url = server_url_for(settings, request)

    budgets = current_budgets()
    if budgets is not None:
        budgets.check(identity)
    room_name = new_room_name()
    store: SessionStore = current_app.extensions[_STORE]
    cap = settings.token_max_sessions_per_identity
    # An unused token counts for the join window only; a late join counts again (`sessions`).
    pending_s = min(settings.token_join_window_seconds, settings.token_ttl_seconds)
    reservation = store.reserve(identity, room_name, pending_s, cap)
    if not reservation.granted:
        raise ApiError(
            429,
            "too_many_sessions",
            f"this identity already has {cap} call{'s' if cap != 1 else ''} open or pending; "
            f"retry in {reservation.retry_after_s} s",
            {"Retry-After": str(reservation.retry_after_s)},
        )
    admission: AdmissionControl | None = current_app.extensions[_ADMISSION]
    if admission is not None:
        verdict = admission.admit(room_name)
        if not verdict.admitted:
            store.left(identity, room_name)  # the room will never exist: free the identity's slot
            raise admission.refusal(verdict)
    issued = mint_token(settings, token_request, identity=identity, room_name=room_name)

    metrics = get_metrics(current_app)
    if metrics is not None:
        metrics.tokens_issued.inc()
    log.info(
        logs.TOKEN_ISSUED,
        **logs.call_fields(room=issued.room_name, participant=issued.participant_identity),
        auth_mode=caller.mode,
        agent_name=settings.agent_name,
        ttl_s=settings.token_ttl_seconds,
    )

    body: dict[str, str | list[str]] = {
        "server_url": server_url,
        "participant_token": issued.token,
        "room_name": issued.room_name,
        "participant_identity": issued.participant_identity,
        "publish_sources": list(issued.publish_sources),
    }
    if issued.participant_name is not None:
        body["participant_name"] = issued.participant_name
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 201


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API (``application/yaml``)."""
    spec = resources.files("token_server").joinpath("openapi.yaml").read_bytes()
    return Response(spec, mimetype="application/yaml")
