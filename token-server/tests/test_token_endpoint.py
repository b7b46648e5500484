"""The issued token: grants, room configuration, agent dispatch, TTL, response shape."""

from __future__ import annotations

import json
import re
import time

import jwt
from flask.testing import FlaskClient
from livekit import api
from structlog.testing import capture_logs

from token_server import create_app

from tokenserver_testing import AGENT_NAME, API_KEY, API_SECRET, make_settings

ROOM = re.compile(r"^room-[A-Za-z0-9_-]{22}$")
USER = re.compile(r"^user-[A-Za-z0-9_-]{16}$")


def verify(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(API_KEY, API_SECRET).verify(token)


def test_empty_body_issues_token_with_least_privilege(client: FlaskClient) -> None:
    response = client.post("/api/token", json={})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"server_url", "participant_token", "room_name", "participant_identity", "publish_sources"}
    assert body["publish_sources"] == ["microphone"]
    assert ROOM.match(body["room_name"])
    assert USER.match(body["participant_identity"])

    claims = verify(body["participant_token"])
    assert claims.identity == body["participant_identity"]
    assert claims.name == ""
    video = claims.video
    assert video is not None
    assert video.room_join is True
    assert video.room == body["room_name"]
    assert video.can_publish is True
    assert video.can_publish_sources == ["microphone"]
    assert video.can_subscribe is True
    assert video.can_publish_data is True
    assert video.can_update_own_metadata is False
    for power in ("room_create", "room_admin", "room_list", "room_record", "hidden", "recorder",
                  "ingress_admin", "agent", "destination_room", "can_manage_agent_session"):
        assert not getattr(video, power), power


def test_raw_jwt_has_no_extra_grants(client: FlaskClient) -> None:
    token = client.post("/api/token", json={}).get_json()["participant_token"]
    payload = jwt.decode(token, API_SECRET, algorithms=["HS256"], issuer=API_KEY)
    assert set(payload) == {"sub", "iss", "nbf", "exp", "video", "roomConfig"}
    assert set(payload["video"]) == {
        "roomJoin", "room", "canPublish", "canPublishSources", "canSubscribe",
        "canPublishData", "canUpdateOwnMetadata",
    }


def test_room_configuration_dispatches_the_agent(client: FlaskClient) -> None:
    body = client.post(
        "/api/token", json={"participant_identity": "alice-1", "participant_name": "Alice Ærø"}
    ).get_json()
    config = verify(body["participant_token"]).room_config
    assert config is not None
    assert config.name == body["room_name"]
    assert config.empty_timeout == 60
    assert config.departure_timeout == 20
    assert config.max_participants == 3
    assert len(config.agents) == 1
    dispatch = config.agents[0]
    assert dispatch.agent_name == AGENT_NAME
    assert json.loads(dispatch.metadata) == {"participant_identity": "alice-1", "participant_name": "Alice Ærø"}


def test_dispatch_metadata_without_name(client: FlaskClient) -> None:
    body = client.post("/api/token", json={}).get_json()
    dispatch = verify(body["participant_token"]).room_config.agents[0]  # type: ignore[union-attr]
    assert json.loads(dispatch.metadata) == {
        "participant_identity": body["participant_identity"], "participant_name": None,
    }


def test_configured_values_reach_the_token() -> None:
    settings = make_settings(
        agent_name="other-agent", token_ttl_seconds=120, room_empty_timeout_seconds=30,
        room_departure_timeout_seconds=5, room_max_participants=4,
    )
    body = create_app(settings).test_client().post("/api/token", json={}).get_json()
    payload = jwt.decode(body["participant_token"], API_SECRET, algorithms=["HS256"], issuer=API_KEY)
    assert abs(payload["exp"] - (time.time() + 120)) < 5
    assert payload["roomConfig"]["emptyTimeout"] == 30
    assert payload["roomConfig"]["departureTimeout"] == 5
    assert payload["roomConfig"]["maxParticipants"] == 4
    assert payload["roomConfig"]["agents"][0]["agentName"] == "other-agent"


def test_default_ttl_is_short(client: FlaskClient) -> None:
    token = client.post("/api/token", json={}).get_json()["participant_token"]
    payload = jwt.decode(token, API_SECRET, algorithms=["HS256"], issuer=API_KEY)
    assert 590 <= payload["exp"] - time.time() <= 605
    assert payload["nbf"] <= time.time() + 1


def test_identity_name_metadata_attributes_are_carried(client: FlaskClient) -> None:
    response = client.post(
        "/api/token",
        json={
            "participant_identity": "Bob_2.phone-x",
            "participant_name": "Bob",
            "participant_metadata": '{"lang": "de"}',
            "participant_attributes": {"device": "phone", "app.version": "1.2"},
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["participant_identity"] == "Bob_2.phone-x"
    assert body["participant_name"] == "Bob"
    claims = verify(body["participant_token"])
    assert claims.identity == "Bob_2.phone-x"
    assert claims.name == "Bob"
    assert claims.metadata == '{"lang": "de"}'
    assert claims.attributes == {"device": "phone", "app.version": "1.2"}


def test_null_fields_count_as_absent(client: FlaskClient) -> None:
    response = client.post(
        "/api/token",
        json={"room_name": None, "room_config": None, "participant_identity": None, "participant_name": None},
    )
    assert response.status_code == 201
    assert USER.match(response.get_json()["participant_identity"])


def test_two_calls_get_different_rooms_and_identities(client: FlaskClient) -> None:
    first = client.post("/api/token", json={}).get_json()
    second = client.post("/api/token", json={}).get_json()
    assert first["room_name"] != second["room_name"]
    assert first["participant_identity"] != second["participant_identity"]
    third = client.post("/api/token", json={"participant_identity": "same"}).get_json()
    fourth = client.post("/api/token", json={"participant_identity": "same"}).get_json()
    assert third["room_name"] != fourth["room_name"]


def test_empty_body_with_json_content_type_is_fine(client: FlaskClient) -> None:
    response = client.post("/api/token", data=b"", content_type="application/json")
    assert response.status_code == 201
    response = client.post("/api/token", data=b"{}", content_type="application/json; charset=utf-8")
    assert response.status_code == 201


def test_server_url_derived_from_request(client: FlaskClient) -> None:
    def url(**kwargs: object) -> str:
        return client.post("/api/token", json={}, **kwargs).get_json()["server_url"]  # type: ignore[arg-type]

    assert url(base_url="http://voice.example:8443") == "ws://voice.example:8443"
    assert url(base_url="https://voice.example") == "wss://voice.example"
    assert url(base_url="http://voice.example", headers={"X-Forwarded-Proto": "https"}) == "wss://voice.example"
    assert url(base_url="https://voice.example", headers={"X-Forwarded-Proto": "http"}) == "ws://voice.example"
    assert url(base_url="http://10.0.0.5", headers={"X-Forwarded-Proto": "https, http"}) == "wss://10.0.0.5"
    assert url(base_url="http://h", headers={"X-Forwarded-Proto": "gopher"}) == "ws://h"


def test_bad_host_header_is_refused(client: FlaskClient) -> None:
    response = client.post("/api/token", json={}, headers={"Host": "evil/path?x"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_host"


def test_public_url_setting_wins() -> None:
    app = create_app(make_settings(livekit_public_url="wss://lk.example.org/"))
    body = app.test_client().post(
        "/api/token", json={}, base_url="http://other", headers={"X-Forwarded-Proto": "http"}
    ).get_json()
    assert body["server_url"] == "wss://lk.example.org"


def test_one_log_line_per_token_without_secret_or_token(client: FlaskClient) -> None:
    with capture_logs() as logs:
        body = client.post("/api/token", json={"participant_identity": "carol"}).get_json()
    issued = [entry for entry in logs if entry["event"] == "token_issued"]
    assert len(issued) == 1
    assert issued[0]["room"] == body["room_name"]
    assert issued[0]["participant"] == "carol"
    text = json.dumps(logs)
    assert API_SECRET not in text
    assert body["participant_token"] not in text


def test_metrics_count_tokens_and_rejections(client: FlaskClient) -> None:
    client.post("/api/token", json={})
    client.post("/api/token", json={})
    client.post("/api/token", json={"room_name": "mine"})
    client.get("/nowhere")
    text = client.get("/metrics").get_data(as_text=True)
    assert "token_server_tokens_issued_total 2.0" in text
    assert 'token_server_requests_rejected_total{code="field_not_allowed"} 1.0' in text
    assert 'token_server_requests_rejected_total{code="not_found"} 1.0' in text


def test_apps_have_separate_metrics() -> None:
    first = create_app(make_settings()).test_client()
    second = create_app(make_settings()).test_client()
    first.post("/api/token", json={})
    assert "token_server_tokens_issued_total 0.0" in second.get("/metrics").get_data(as_text=True)
