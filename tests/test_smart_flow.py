"""End-to-end SMART authorization code flow: standalone launch, PKCE, redirect_uri, aud, code reuse."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from fixtures_app import *  # noqa: F401,F403
from fixtures_app import FHIR_BASE, PUBLIC_URL
from smart_flow import DEFAULT_REDIRECT_URI, DEFAULT_SCOPE, make_verifier, s256


@pytest.fixture
def alice(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    return auth


def decode(app, token):
    from smart.tokens import decode_access_token

    with app.app_context():
        return decode_access_token(token)


def test_full_flow_public_client(app, alice):
    code = alice.authorize(state="xyz-123")
    assert code.state == "xyz-123"
    assert code.location.startswith(DEFAULT_REDIRECT_URI + "?")
    response = alice.exchange_response(code, code.verifier)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["patient"] == "patient-1"
    assert body["scope"] == DEFAULT_SCOPE
    assert "refresh_token" not in body
    claims = decode(app, body["access_token"])
    assert claims["patient"] == "patient-1"
    assert claims["scope"] == DEFAULT_SCOPE
    assert claims["client_id"] == "test-app"
    assert claims["sub"] == "alice"
    assert claims["iss"] == PUBLIC_URL
    assert claims["aud"] == FHIR_BASE
    assert claims["fhirUser"] == "Patient/patient-1"
    assert claims["exp"] - claims["iat"] == 3600
