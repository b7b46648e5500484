"""One error shape for every failure: ``{"error": {"code": str, "message": str}}``.

Validation errors, refused credentials (401), limits (429), unknown routes (404), wrong
methods (405), oversized bodies (413), wrong content types (415), malformed JSON, an
unreachable Redis (503) and unexpected exceptions (500) all leave as JSON; never an HTML
page or a stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import structlog
from redis.exceptions import RedisError
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .metrics import get_metrics

log = structlog.get_logger("token_server")

#: Machine-readable codes for the HTTP errors Flask/Werkzeug raise themselves.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


class ApiError(Exception):
    """An error the API answers with on purpose.

    Args:
        status: HTTP status (4xx, or 503).
        code: stable machine-readable code, e.g. ``"validation_error"``.
        message: human-readable text; names the field at fault, never echoes secrets.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The JSON error body with `status`; counts and logs the rejection."""
    metrics = get_metrics(current_app)
    if metrics is not None:
        metrics.requests_rejected.labels(code=code).inc()
    log.info("request_rejected", status=status, code=code, method=request.method, path=request.path)
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def _http_code(error: HTTPException) -> str:
    status = error.code or 500
    if status in HTTP_CODES:
        return HTTP_CODES[status]
    return re.sub(r"[^a-z0-9]+", "_", (error.name or "error").lower()).strip("_")


def _handle_api_error(error: ApiError) -> Response:
    return error_response(error.status, error.code, error.message, error.headers)


def _handle_redis_error(error: RedisError) -> Response:
    # The message may carry the Redis URL (and its password): log the type only.
    log.error("storage_unavailable", error=type(error).__name__, method=request.method, path=request.path)
    return error_response(
        503, "storage_unavailable", "storage (Redis) is unreachable; try again shortly", {"Retry-After": "5"}
    )


def _handle_http_error(error: HTTPException) -> Response | HTTPException:
    if error.code is not None and error.code < 400:
        return error  # routing redirects are not errors
    status = error.code or 500
    message = error.description or error.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"request body is larger than {limit} bytes"
    response = error_response(status, _http_code(error), message)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _handle_unexpected(error: Exception) -> Response:
    log.error("request_failed", method=request.method, path=request.path, exc_info=error)
    return error_response(500, "internal_error", "internal error; see the server log")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers on `app`."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(RedisError, _handle_redis_error)
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(Exception, _handle_unexpected)
