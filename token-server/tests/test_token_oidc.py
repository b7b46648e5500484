"""``oidc`` mode against a real local identity provider (discovery + JWKS over HTTP, RSA
and P-256 keys): what is accepted, and every forgery that must be refused with 401."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask.testing import FlaskClient
from livekit import api
from structlog.testing import capture_logs

from tests.standins.oidc_provider import OidcProvider, new_ec_key, new_rsa_key, tamper
from token_server import create_app
from token_server.oidc import OidcConfig, OidcVerifier, ProviderUnavailable, discover_jwks_url

from tokenserver_testing import API_KEY, API_SECRET, make_settings

AUDIENCE = "voice-appliance-test"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider(audience=AUDIENCE) as provider:
        yield provider


def oidc_client(idp: OidcProvider, **overrides: object) -> FlaskClient:
    values: dict[str, object] = {
        "token_auth_mode": "oidc",
        "oidc_issuer": idp.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": idp.jwks_url,
        "token_rate_limit_per_address": "1000/minute",
    }
    values.update(overrides)
    return create_app(make_settings(**values)).test_client()


@pytest.fixture
def client(idp: OidcProvider) -> FlaskClient:
    return oidc_client(idp)


def ask(client: FlaskClient, token: str, body: dict[str, object] | None = None) -> tuple[int, dict]:
    response = client.post("/api/token", json=body or {}, headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return response.status_code, response.get_json()


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"], ids=["RS256", "ES256"])
def test_valid_id_token_is_accepted_and_sub_is_the_identity(idp: OidcProvider, client: FlaskClient, kid: str) -> None:
    status, body = ask(client, idp.id_token("firebase-uid-123", kid=kid), {"participant_name": "Ada"})
    assert status == 201, body
    assert body["participant_identity"] == "firebase-uid-123"
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(body["participant_token"])
    assert claims.identity == "firebase-uid-123"
    assert claims.name == "Ada"


def test_provider_style_subjects_are_kept_verbatim(idp: OidcProvider, client: FlaskClient) -> None:
    for subject in ("auth0|5f7c8ec7c33c6c004bbafe82", "google-oauth2|1034", "3d1c9a1e-7f0b-4b4e-8a7e-7c1d2b6f0e55"):
        status, body = ask(client, idp.id_token(subject))
        assert status == 201 and body["participant_identity"] == subject


def attacks(idp: OidcProvider) -> dict[str, str]:
    valid = idp.id_token("victim")
    return {
        "expired": idp.id_token("u", expires_in=-120),
        "wrong_issuer": idp.id_token("u", iss="https://evil.example"),
        "wrong_audience": idp.id_token("u", aud="someone-else"),
        "alg_none": idp.forge_unsigned("u"),
        "hs256_with_public_key": idp.forge_hmac("u"),
        "hs256_with_public_key_ec": idp.forge_hmac("u", kid="ec-1"),
        "unknown_kid": idp.id_token("u", kid="rogue", key=new_rsa_key()),
        "known_kid_other_key": idp.id_token("u", kid="rsa-1", key=new_rsa_key()),
        "ec_kid_other_key": idp.id_token("u", kid="ec-1", key=new_ec_key()),
        "tampered_sub": tamper(valid, sub="admin"),
        "tampered_exp": tamper(idp.id_token("u", expires_in=-120), exp=2_000_000_000),
        "no_sub": idp.id_token("u", sub=None),
        "no_exp": idp.id_token("u", exp=None),
        "no_aud": idp.id_token("u", aud=None),
        "not_yet_valid": idp.id_token("u", nbf=2_000_000_000),
        "not_a_jwt": "not.a.jwt",
        "garbage": "x" * 40,
        "agent_subject": idp.id_token("agent-impersonator"),
        "subject_with_space": idp.id_token("a b"),
    }


ATTACKS = [
    "expired", "wrong_issuer", "wrong_audience", "alg_none", "hs256_with_public_key",
    "hs256_with_public_key_ec", "unknown_kid", "known_kid_other_key", "ec_kid_other_key",
    "tampered_sub", "tampered_exp", "no_sub", "no_exp", "no_aud", "not_yet_valid", "not_a_jwt",
    "garbage", "agent_subject", "subject_with_space",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_forged_or_invalid_id_tokens_are_401(idp: OidcProvider, client: FlaskClient, attack: str) -> None:
    token = attacks(idp)[attack]
    with capture_logs() as logs:
        status, body = ask(client, token)
    assert status == 401, body
    assert set(body) == {"error"} and body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith(("ID token rejected", "credentials required"))
    assert token not in json.dumps(logs)


def test_reasons_are_specific(idp: OidcProvider, client: FlaskClient) -> None:
    cases = {
        "expired": "expired", "wrong_issuer": "wrong issuer", "wrong_audience": "wrong audience",
        "alg_none": "algorithm not allowed", "hs256_with_public_key": "algorithm not allowed",
        "unknown_kid": "unknown signing key", "known_kid_other_key": "signature",
        "tampered_sub": "signature", "no_sub": "'sub'",
    }
    forged = attacks(idp)
    for attack, words in cases.items():
        assert words in ask(client, forged[attack])[1]["error"]["message"], attack


def test_leeway_tolerates_small_clock_skew(idp: OidcProvider) -> None:
    client = oidc_client(idp, oidc_leeway_seconds=60)
    assert ask(client, idp.id_token("u", expires_in=-20))[0] == 201
    strict = oidc_client(idp, oidc_leeway_seconds=0)
    assert ask(strict, idp.id_token("u", expires_in=-20))[0] == 401


def test_only_configured_algorithms(idp: OidcProvider) -> None:
    client = oidc_client(idp, oidc_algorithms="ES256")
    assert ask(client, idp.id_token("u", kid="rsa-1"))[0] == 401
    assert ask(client, idp.id_token("u", kid="ec-1"))[0] == 201


def test_any_configured_audience_or_issuer(idp: OidcProvider) -> None:
    client = oidc_client(idp, oidc_audience=f"web-client,{AUDIENCE}", oidc_issuer=f"accounts.example,{idp.issuer}")
    assert ask(client, idp.id_token("u"))[0] == 201
    assert ask(client, idp.id_token("u", aud="web-client"))[0] == 201
    assert ask(client, idp.id_token("u", iss="accounts.example"))[0] == 201


def test_missing_bearer_is_401(client: FlaskClient) -> None:
    response = client.post("/api/token", json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="token-server"'


def test_body_identity_is_refused(idp: OidcProvider, client: FlaskClient) -> None:
    status, body = ask(client, idp.id_token("real-user"), {"participant_identity": "someone-else"})
    assert status == 403 and body["error"]["code"] == "field_not_allowed"


def test_jwks_is_fetched_once_and_cached(idp: OidcProvider) -> None:
    client = oidc_client(idp)
    before = idp.jwks_fetches
    for n, kid in enumerate(["rsa-1", "ec-1"] * 5):
        assert ask(client, idp.id_token(f"user-{n}", kid=kid))[0] == 201
    assert idp.jwks_fetches - before == 1


def test_unknown_kids_do_not_hammer_the_provider(idp: OidcProvider) -> None:
    client = oidc_client(idp)
    assert ask(client, idp.id_token("u"))[0] == 201
    before = idp.jwks_fetches
    for n in range(5):
        assert ask(client, idp.id_token("u", kid=f"rogue-{n}", key=new_rsa_key()))[0] == 401
    assert idp.jwks_fetches - before <= 1  # PyJWT's refresh cooldown


def test_jwks_url_discovered_from_the_issuer(idp: OidcProvider) -> None:
    client = oidc_client(idp, oidc_jwks_url="")
    assert ask(client, idp.id_token("u", kid="ec-1"))[0] == 201


def test_provider_down_is_503_not_401() -> None:
    with OidcProvider(audience=AUDIENCE) as idp:
        token = idp.id_token("u")
        client = oidc_client(idp)
    # The provider has stopped: its keys cannot be fetched.
    response = client.post("/api/token", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "identity_provider_unavailable"
    assert response.headers["Retry-After"].isdigit()


def test_discovery_failure_is_503(idp: OidcProvider) -> None:
    client = oidc_client(idp, oidc_jwks_url="", oidc_issuer=f"{idp.issuer}/no-such-realm")
    status, body = ask(client, idp.id_token("u", iss=f"{idp.issuer}/no-such-realm"))
    assert status == 503 and body["error"]["code"] == "identity_provider_unavailable"


def test_a_discovered_jwks_uri_must_be_https() -> None:
    with OidcProvider(audience=AUDIENCE) as provider:
        provider.discovery_jwks_uri = "http://idp.example/jwks.json"
        status, body = ask(oidc_client(provider, oidc_jwks_url=""), provider.id_token("u"))
        assert status == 503 and body["error"]["code"] == "identity_provider_unavailable"
        with pytest.raises(ProviderUnavailable, match="https jwks_uri"):  # refused, not fetched
            discover_jwks_url(provider.issuer)


def test_discovery_follows_no_redirect() -> None:
    with OidcProvider(audience=AUDIENCE) as provider, OidcProvider(audience=AUDIENCE) as elsewhere:
        provider.discovery_redirect = f"{elsewhere.issuer}/.well-known/openid-configuration"
        status, body = ask(oidc_client(provider, oidc_jwks_url=""), provider.id_token("u"))
        assert status == 503 and body["error"]["code"] == "identity_provider_unavailable"
        assert provider.discovery_fetches == 1 and elsewhere.discovery_fetches == 0


def test_a_failed_discovery_runs_once_for_concurrent_requests_and_is_remembered() -> None:
    with OidcProvider(audience=AUDIENCE) as provider:
        provider.discovery_jwks_uri = "http://idp.example/jwks.json"  # refused: discovery fails
        provider.discovery_delay_s = 0.5
        verifier = OidcVerifier(OidcConfig(issuers=[provider.issuer], audiences=[AUDIENCE],
                                           algorithms=["RS256", "ES256"], discovery_retry_s=2.0))
        token = provider.id_token("u")

        def outcome(_: int) -> str:
            try:
                return verifier.verify(token)["sub"]
            except ProviderUnavailable:
                return "unavailable"

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(outcome, range(8))) == ["unavailable"] * 8
        assert outcome(0) == "unavailable"
        assert provider.discovery_fetches == 1  # not one per request, not one after another

        provider.discovery_jwks_uri = None  # the provider recovers
        time.sleep(2.1)
        assert outcome(0) == "u"
        assert provider.discovery_fetches == 2
