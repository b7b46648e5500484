"""Liveness: ``GET /healthz`` answers 200 ``{"status": "ok"}`` once the app is built
(settings were accepted at start-up, so there is nothing more to check)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 ``{"status": "ok"}``."""
    response = jsonify({"status": "ok"})
    response.headers["Cache-Control"] = "no-store"
    return response
