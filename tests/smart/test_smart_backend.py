"""SMART Backend Services: client_credentials with private_key_jwt (SA-6)."""
from __future__ import annotations

import secrets
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from facade_helpers import PUBLIC_URL
from access_helpers import allow

TOKEN_URL = PUBLIC_URL + "/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def client_keys():
    return {
        "RS384": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True),
        "ES384": ECKey.generate_key("P-384", parameters={"kid": "ec-1"}, private=True),
    }


@pytest.fixture
def backend(app, client_keys):
    from smart.admin.cli import add_client

    jwks = {"keys": [k.as_dict(private=False) for k in client_keys.values()]}
    with app.app_context():
        add_client("bulk", [], public=False, jwks=jwks, scope="system/ImagingStudy.rs system/Patient.rs")
    return "bulk"


def assertion(key, alg, **overrides):
    now = int(time.time())
    claims = {"iss": "bulk", "sub": "bulk", "aud": TOKEN_URL, "exp": now + 240, "jti": secrets.token_hex(16)}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def request_token(client, signed, scope="system/ImagingStudy.rs"):
    return client.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed,
    })


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_token(app, client, backend, client_keys, alg):
    from smart.tokens.jwt import decode_access_token

    response = request_token(client, assertion(client_keys[alg], alg),
                             scope="system/ImagingStudy.rs system/Observation.rs patient/Patient.rs")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["scope"] == "system/ImagingStudy.rs"
    assert body["expires_in"] == 300
    assert "refresh_token" not in body
    assert response.headers["Cache-Control"] == "no-store"
    with app.app_context():
        claims = decode_access_token(body["access_token"])
    assert claims["sub"] == "bulk" and claims["client_id"] == "bulk"
    assert claims["exp"] - claims["iat"] == 300
    assert "patient" not in claims


def test_jti_replay_refused(client, backend, client_keys):
    signed = assertion(client_keys["RS384"], "RS384")
    assert request_token(client, signed).status_code == 200
    again = request_token(client, signed)
    assert again.status_code == 401
    assert again.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("overrides", [
    {"exp": int(time.time()) + 600},          # more than 5 minutes ahead
    {"exp": int(time.time()) - 120},          # expired
    {"exp": None},
    {"aud": PUBLIC_URL + "/fhir"},            # wrong aud
    {"aud": "https://other.example/auth/token"},
    {"jti": None},
    {"sub": "someone-else"},
    {"iss": "unknown", "sub": "unknown"},
])
def test_bad_assertions_refused(client, backend, client_keys, overrides):
    if "exp" in overrides and overrides["exp"] is not None:
        overrides["exp"] = int(time.time()) + (overrides["exp"] - int(time.time()))
    response = request_token(client, assertion(client_keys["ES384"], "ES384", **overrides))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_unregistered_key_refused(client, backend):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
    response = request_token(client, assertion(stranger, "RS384"))
    assert response.get_json()["error"] == "invalid_client"


def test_rs256_assertion_refused(client, backend, client_keys):
    response = request_token(client, assertion(client_keys["RS384"], "RS256"))
    assert response.get_json()["error"] == "invalid_client"


def test_iat_not_required_and_no_system_scope_is_invalid_scope(client, backend, client_keys):
    response = request_token(client, assertion(client_keys["RS384"], "RS384"), scope="patient/Patient.rs")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


@pytest.mark.parametrize("claims", [
    {"nbf": 3600},               # not valid for another hour
    {"nbf": 120},
    {"iat": 3600},               # issued an hour from now
    {"iat": 120},
    {"iat": "yesterday"},
    {"nbf": "now"},
])
def test_assertion_from_the_future_is_refused(client, backend, client_keys, claims):
    """RFC 7519 §4.1.5 nbf, §4.1.6 iat; RFC 7523 §3 items 5-6: a JWT that is not valid yet, or
    claims to be issued in the future beyond a small skew, is refused."""
    now = int(time.time())
    claims = {k: now + v if isinstance(v, int) else v for k, v in claims.items()}
    response = request_token(client, assertion(client_keys["RS384"], "RS384", **claims))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_with_past_nbf_iat_and_small_skew_is_accepted(client, backend, client_keys):
    now = int(time.time())
    for claims in ({"nbf": now - 5, "iat": now - 5}, {"nbf": now, "iat": now}, {"iat": now + 20}):
        response = request_token(client, assertion(client_keys["RS384"], "RS384", **claims))
        assert response.status_code == 200, (claims, response.get_data(as_text=True))


def test_secret_client_may_not_use_client_credentials(auth, client):
    """RFC 6749 §5.2: a client that authenticated correctly but may not use the grant is
    unauthorized_client; bad credentials stay invalid_client."""
    auth.register_confidential_client("conf", "pw")
    for headers, data in (({"Authorization": "Basic Y29uZjpwdw=="}, {}),          # conf:pw
                          ({}, {"client_id": "conf", "client_secret": "pw"})):
        response = client.post("/auth/token", headers=headers,
                               data={"grant_type": "client_credentials", "scope": "system/*.rs", **data})
        assert response.status_code == 400
        assert response.get_json()["error"] == "unauthorized_client"
    wrong = client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                        headers={"Authorization": "Basic Y29uZjp3cm9uZw=="})          # conf:wrong
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"


def test_public_client_cannot_authenticate_for_client_credentials(auth, client):
    auth.register_public_client()
    response = client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs",
                                                 "client_id": "test-app"})
    assert response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("registered, requested, granted", [
    ("system/ImagingStudy.rs", "system/ImagingStudy.r", "system/ImagingStudy.r"),
    ("system/ImagingStudy.rs", "system/ImagingStudy.read", "system/ImagingStudy.read"),
    ("system/ImagingStudy.read", "system/ImagingStudy.s", "system/ImagingStudy.s"),
    ("system/*.rs", "system/ImagingStudy.rs system/Patient.r", "system/ImagingStudy.rs system/Patient.r"),
    ("system/*.*", "system/Endpoint.cruds", "system/Endpoint.cruds"),
    ("system/ImagingStudy.rs", "system/ImagingStudy.rs system/ImagingStudy.cruds", "system/ImagingStudy.rs"),
    ("system/ImagingStudy.rs", "system/Patient.r system/*.r", ""),
])
def test_requested_scope_within_a_registered_scope_is_granted(app, client, client_keys, registered,
                                                              requested, granted):
    """SMART 2.2 §Scopes: .r and .s are parts of .rs, .read of .*, a type of *."""
    from smart.admin.cli import add_client

    with app.app_context():
        add_client("bulk", [], public=False, scope=registered,
                   jwks={"keys": [client_keys["RS384"].as_dict(private=False)]})
    response = request_token(client, assertion(client_keys["RS384"], "RS384"), scope=requested)
    if granted:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["scope"] == granted
    else:
        assert response.get_json()["error"] == "invalid_scope"


def test_asymmetric_app_launch_client(app, auth, client_keys):
    from smart.admin.cli import add_client
    from smart_flow import DEFAULT_REDIRECT_URI

    jwks = {"keys": [client_keys["ES384"].as_dict(private=False)]}
    with app.app_context():
        add_client("bulk", [DEFAULT_REDIRECT_URI], public=False, jwks=jwks)
    auth.register_user()
    code = auth.authorize(client_id="bulk")
    body = auth.exchange(code, client_id="bulk", client_assertion_type=ASSERTION_TYPE,
                         client_assertion=assertion(client_keys["ES384"], "ES384"))
    assert body["patient"] == "patient-1"
    without = auth.authorize(client_id="bulk")
    response = auth.exchange_response(without, without.verifier, client_id="bulk")
    assert response.get_json()["error"] == "invalid_client"


def test_launch_api_for_ehr_backend(app, auth, client_keys):
    from smart.admin.cli import add_client

    jwks = {"keys": [client_keys["RS384"].as_dict(private=False)]}
    with app.app_context():
        add_client("ehr", [], public=False, jwks=jwks, scope="launch system/Patient.rs")
        add_client("bulk", [], public=False, jwks=jwks, scope="system/Patient.rs")
    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")

    def backend_token(client_id, scope):
        signed = assertion(client_keys["RS384"], "RS384", iss=client_id, sub=client_id)
        return auth.client.post("/auth/token", data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}).get_json()

    token = backend_token("ehr", "launch system/Patient.rs")
    assert token["scope"] == "launch system/Patient.rs"
    allow(app, ["patient-5"], client_id="ehr")  # the EHR launches only for patients it was granted
    allow(app, ["patient-5"], username="dr")  # and its practitioner sees only theirs
    # need_patient_banner is false unless the EHR asks for it (issue 14: the EHR shows the patient).
    for sent, expected in ((None, False), ("true", True), (False, False)):
        fields = {"patient": "patient-5"} | ({} if sent is None else {"need_patient_banner": sent})
        created = auth.client.post("/auth/launch", json=fields,
                                   headers={"Authorization": "Bearer " + token["access_token"]})
        assert created.status_code == 201, created.get_data(as_text=True)
        launch = created.get_json()["launch"]
        code = auth.authorize("dr", "pw-dr", scope="launch patient/ImagingStudy.rs", launch=launch)
        body = auth.exchange(code)
        assert body["patient"] == "patient-5" and body["need_patient_banner"] is expected, sent

    assert auth.client.post("/auth/launch", json={"patient": "p"}).status_code == 401
    other = backend_token("bulk", "system/Patient.rs")
    refused = auth.client.post("/auth/launch", json={"patient": "p"},
                               headers={"Authorization": "Bearer " + other["access_token"]})
    assert refused.status_code == 403
    bad = auth.client.post("/auth/launch", json={"patient": "not valid!"},
                           headers={"Authorization": "Bearer " + token["access_token"]})
    assert bad.status_code == 400
