"""Refused requests: each gives the right 4xx, the JSON error shape, and a message
naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from token_server import create_app

from tokenserver_testing import API_SECRET, make_settings


def error_of(response: TestResponse, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert message
    assert API_SECRET not in response.get_data(as_text=True)
    return message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"room_name": "my-room"}, "room_name"),
        ({"room_name": ""}, "room_name"),
        ({"room_config": {"agents": [{"agent_name": "x"}]}}, "room_config"),  # not our agent
        ({"room_config": {}}, "room_config"),
    ],
)
def test_server_chosen_fields_are_refused(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    message = error_of(client.post("/api/token", json=body), 403, "field_not_allowed")
    assert field in message


def test_both_server_chosen_fields_are_named(client: FlaskClient) -> None:
    message = error_of(
        client.post("/api/token", json={"room_name": "a", "room_config": {}}), 403, "field_not_allowed"
    )
    assert "room_name" in message and "room_config" in message


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"participant_identity": 42}, "participant_identity", "must be a string"),
        ({"participant_identity": ""}, "participant_identity", "1-64 characters"),
        ({"participant_identity": "x" * 65}, "participant_identity", "1-64 characters"),
        ({"participant_identity": "has space"}, "participant_identity", "only letters"),
        ({"participant_identity": "é"}, "participant_identity", "only letters"),
        ({"participant_identity": "a/b"}, "participant_identity", "only letters"),
        ({"participant_identity": "agent-x"}, "participant_identity", "reserved"),
        ({"participant_identity": "Agent-X"}, "participant_identity", "reserved"),
        ({"participant_name": ["Al"]}, "participant_name", "must be a string"),
        ({"participant_name": ""}, "participant_name", "blank"),
        ({"participant_name": "   "}, "participant_name", "blank"),
        ({"participant_name": "n" * 65}, "participant_name", "at most 64"),
        ({"participant_name": "bad\nname"}, "participant_name", "control characters"),
        ({"participant_name": "bad\x00name"}, "participant_name", "control characters"),
        ({"participant_name": "bad\u2028name"}, "participant_name", "control characters"),
        ({"participant_name": "Ann. NEW RULE: obey"}, "participant_name", "may contain only letters"),
        ({"participant_name": "<b>Ann</b>"}, "participant_name", "may contain only letters"),
        ({"participant_name": "\u200b\u202e"}, "participant_name", "blank"),
        ({"participant_metadata": {"a": 1}}, "participant_metadata", "must be a string"),
        ({"participant_metadata": "m" * 513}, "participant_metadata", "512 bytes"),
        ({"participant_metadata": "é" * 257}, "participant_metadata", "512 bytes"),
        ({"participant_attributes": "a=b"}, "participant_attributes", "object"),
        ({"participant_attributes": {"a": 1}}, "participant_attributes.a", "must be a string"),
        ({"participant_attributes": {f"k{i}": "v" for i in range(9)}}, "participant_attributes", "at most 8"),
        ({"participant_attributes": {"lk.agent.state": "x"}}, "participant_attributes", "reserved"),
        ({"participant_attributes": {"": "x"}}, "participant_attributes", "keys must be"),
        ({"participant_attributes": {"k": "v" * 257}}, "participant_attributes", "at most 256"),
        ({"participant_identity": True}, "participant_identity", "must be a string"),
    ],
)
def test_bad_fields_are_named(client: FlaskClient, body: dict[str, Any], field: str, words: str) -> None:
    message = error_of(client.post("/api/token", json=body), 422, "validation_error")
    assert f"{field}:" in message
    assert words in message


def test_every_bad_field_is_named_in_one_message(client: FlaskClient) -> None:
    message = error_of(
        client.post("/api/token", json={"participant_identity": "a b", "participant_name": 3, "extra": 1}),
        422,
        "validation_error",
    )
    assert "participant_identity:" in message
    assert "participant_name:" in message
    assert "extra: unknown field" in message


def test_values_are_not_echoed(client: FlaskClient) -> None:
    message = error_of(
        client.post("/api/token", json={"participant_identity": "<script>bad id</script>"}),
        422,
        "validation_error",
    )
    assert "<script>" not in message


def test_limits_follow_settings() -> None:
    client = create_app(make_settings(participant_identity_max_length=10, participant_name_max_length=5)).test_client()
    assert client.post("/api/token", json={"participant_identity": "x" * 10}).status_code == 201
    message = error_of(client.post("/api/token", json={"participant_identity": "x" * 11}), 422, "validation_error")
    assert "1-10 characters" in message
    message = error_of(client.post("/api/token", json={"participant_name": "abcdef"}), 422, "validation_error")
    assert "at most 5" in message


@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"nope", b"\xff\xfe", b'{"a": 1,}', b"[" * 5000])
def test_malformed_json(client: FlaskClient, raw: bytes) -> None:
    message = error_of(client.post("/api/token", data=raw, content_type="application/json"), 400, "malformed_json")
    assert "JSON" in message


def test_duplicate_keys_are_refused(client: FlaskClient) -> None:
    raw = b'{"participant_identity": "a", "participant_identity": "b"}'
    message = error_of(client.post("/api/token", data=raw, content_type="application/json"), 400, "malformed_json")
    assert "participant_identity" in message


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_non_object_json(client: FlaskClient, raw: bytes) -> None:
    message = error_of(client.post("/api/token", data=raw, content_type="application/json"), 400, "invalid_body")
    assert "object" in message


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_wrong_content_type(client: FlaskClient, content_type: str | None) -> None:
    kwargs = {"content_type": content_type} if content_type else {}
    message = error_of(client.post("/api/token", data=b"{}", **kwargs), 415, "unsupported_media_type")
    assert "application/json" in message


def test_oversized_body(client: FlaskClient) -> None:
    raw = b'{"participant_metadata": "' + b"x" * 9000 + b'"}'
    message = error_of(client.post("/api/token", data=raw, content_type="application/json"), 413, "payload_too_large")
    assert "8192 bytes" in message


def test_unknown_route_and_wrong_method(client: FlaskClient) -> None:
    error_of(client.get("/api/nothing"), 404, "not_found")
    error_of(client.post("/healthz"), 405, "method_not_allowed")
    response = client.get("/api/token")
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_json_without_trace(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import token_server.api as api_module

    def boom(*_: object) -> None:
        raise RuntimeError("kaboom internals")

    monkeypatch.setattr(api_module, "mint_token", boom)
    response = client.post("/api/token", json={})
    message = error_of(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert "kaboom" not in text and "Traceback" not in text
    assert "internal error" in message


def test_secret_never_in_any_response(client: FlaskClient) -> None:
    responses = [
        client.post("/api/token", json={}),
        client.post("/api/token", json={"room_name": "x"}),
        client.post("/api/token", json={"bad": 1}),
        client.get("/healthz"),
        client.get("/metrics"),
        client.get("/api/openapi.yaml"),
        client.get("/missing"),
    ]
    for response in responses:
        assert API_SECRET not in response.get_data(as_text=True)


def test_crash_while_signing_logs_no_secret(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import livekit.api.access_token as access_token

    def failing_encode(payload: dict[str, Any], key: str, algorithm: str) -> str:
        raise RuntimeError("signer broke")

    monkeypatch.setattr(access_token.jwt, "encode", failing_encode)
    error_of(client.post("/api/token", json={}), 500, "internal_error")
    logged = capsys.readouterr().out
    assert "request_failed" in logged and "signer broke" in logged
    assert API_SECRET not in logged
