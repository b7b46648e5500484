"""Health, OpenAPI document."""

from __future__ import annotations

import yaml
from flask.testing import FlaskClient


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_openapi_document(client: FlaskClient) -> None:
    response = client.get("/api/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    spec = yaml.safe_load(response.get_data(as_text=True))
    assert spec["openapi"].startswith("3.1")
    assert {"/api/token", "/api/openapi.yaml", "/healthz", "/metrics"} <= set(spec["paths"])
    token = spec["paths"]["/api/token"]["post"]
    assert {"201", "400", "403", "413", "415", "422"} <= set(token["responses"])
    request_fields = set(spec["components"]["schemas"]["TokenRequest"]["properties"])
    assert {"participant_identity", "participant_name", "participant_metadata", "participant_attributes"} <= request_fields
    assert set(spec["components"]["schemas"]["Error"]["properties"]["error"]["required"]) == {"code", "message"}
