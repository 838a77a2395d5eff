"""Hostile input found by the review of issues 13, 14 and 17: what an attacker can send to the
public OAuth/OIDC routes and to every route taking a Bearer token, answered in the protocol's
shape, never a 500."""
from __future__ import annotations

import base64
import time

import pytest
import responses
from joserfc import jwt
from joserfc.jwk import RSAKey

from facade_helpers import FHIR_BASE, bearer

EHR = "https://ehr.test"
SYSTEM = "urn:oid:1.2.3.4"
EHR_KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})

#: JSON nested deeper than Python's recursion limit: ``json.loads`` raises RecursionError, not
#: ValueError. 3000 bytes, 4000 base64 characters: within any server's header limit.
DEEP = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
HEADER = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k"}').decode().rstrip("=")
PAYLOAD = base64.urlsafe_b64encode(b'{"sub":"x"}').decode().rstrip("=")
#: A nested header, a nested payload (behind a good header), both.
NESTED_JWTS = [f"{DEEP}.{PAYLOAD}.x", f"{HEADER}.{DEEP}.x", f"{DEEP}.{DEEP}.x"]


@pytest.mark.parametrize("value", NESTED_JWTS, ids=["header", "payload", "both"])
@pytest.mark.parametrize("path", ["/fhir/ImagingStudy", "/dicomweb/studies", "/auth/userinfo"])
def test_a_bearer_token_of_deeply_nested_json_is_401(client, path, value):
    response = client.get(path, headers=bearer(value))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("value", NESTED_JWTS, ids=["header", "payload", "both"])
def test_an_id_token_hint_of_deeply_nested_json_is_a_refused_logout(client, value):
    response = client.get("/auth/logout", query_string={"id_token_hint": value,
                                                        "post_logout_redirect_uri": "https://app.example/out"})
    assert response.status_code == 400 and "Location" not in response.headers


@pytest.mark.parametrize("value", NESTED_JWTS, ids=["header", "payload", "both"])
def test_a_client_assertion_of_deeply_nested_json_is_invalid_client(client, value):
    response = client.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/ImagingStudy.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": value})
    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


def _trust_ehr(app) -> None:
    from smart.admin.issuers import add_issuer

    with app.app_context():
        add_issuer(EHR, SYSTEM, fhir_base=EHR + "/fhir")
    responses.get(EHR + "/.well-known/smart-configuration", json={"issuer": EHR, "jwks_uri": EHR + "/jwks"})
    responses.get(EHR + "/jwks", json={"keys": [EHR_KEY.as_dict(private=False)]})


def _ehr_jwt(**claims) -> str:
    now = int(time.time())
    claims = {"iss": EHR, "aud": FHIR_BASE, "exp": now + 600, "iat": now, **claims}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, EHR_KEY, algorithms=["RS256"])


@responses.activate
def test_userinfo_refuses_an_ehr_token_whose_sub_is_a_local_username(app, auth):
    """The EHR's ``sub`` names the EHR's user, not ours: an EHR token must not read the claims
    (fhirUser, the PACS's PatientName) of the facade's user who has the same username."""
    auth.register_user("u", "pw-u", patient="patient-1")
    _trust_ehr(app)
    value = _ehr_jwt(sub="u", client_id="app", scope="openid fhirUser profile user/ImagingStudy.rs",
                     fhirUser="Practitioner/x")
    response = app.test_client().get("/auth/userinfo", headers=bearer(value))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert "fhirUser" not in response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="smart", error="invalid_token"')


@pytest.mark.parametrize("uri", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<b>hi</b>",
                                 "https://app.example/a b", "https://app.example;frame-ancestors */cb",
                                 "https://evil.example@app.example/cb"])
@pytest.mark.parametrize("option", ["--add-redirect-uri", "--add-post-logout-redirect-uri"])
def test_cli_refuses_redirect_uris_a_browser_would_run_or_misread(app, option, uri):
    """A redirect or post-logout URI is a navigation target, the source of the CORS origins and
    of the CSP frame-ancestors of silent renew: no script scheme, no blank, no user information."""
    runner = app.test_cli_runner()
    runner.invoke(args=["smart", "add-client", "--client-id", "viewer", "--redirect-uri", "https://v.example/cb"])
    result = runner.invoke(args=["smart", "update-client", "--client-id", "viewer", option, uri])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    from smart.oauth.server import query_client
    with app.app_context():
        client = query_client("viewer")
        assert client.redirect_uris == ["https://v.example/cb"] and not client.post_logout_redirect_uris


@responses.activate
def test_an_ehr_token_cannot_create_launches_as_the_local_backend_client_of_its_client_id(app):
    """``POST /auth/launch`` is for the facade's own backend clients: an EHR's token whose
    client_id equals one of them must not create launches with that client's access list."""
    from access_helpers import allow
    from smart.admin.cli import add_client

    with app.app_context():
        add_client("ehr-backend", [], public=False, jwks={"keys": [EHR_KEY.as_dict(private=False)]},
                   scope="launch system/ImagingStudy.rs")
    allow(app, ["p-1"], client_id="ehr-backend")
    _trust_ehr(app)
    value = _ehr_jwt(sub="ehr-backend", client_id="ehr-backend", scope="launch system/ImagingStudy.rs")
    response = app.test_client().post("/auth/launch", json={"patient": "p-1"}, headers=bearer(value))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert "launch" not in (response.get_json() or {})


#: An EC key on a curve joserfc does not know: its import raises KeyError, not a JoseError.
ODD_CURVE = {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "odd"}


@responses.activate
def test_an_ehr_jwks_with_an_unknown_curve_beside_the_good_key_still_verifies(app):
    from smart.admin.issuers import add_issuer

    with app.app_context():
        add_issuer(EHR, SYSTEM, fhir_base=EHR + "/fhir")
    responses.get(EHR + "/.well-known/smart-configuration", json={"issuer": EHR, "jwks_uri": EHR + "/jwks"})
    responses.get(EHR + "/jwks", json={"keys": [ODD_CURVE, EHR_KEY.as_dict(private=False)]})
    value = _ehr_jwt(sub="s", client_id="app", scope="system/ImagingStudy.rs")
    response = app.test_client().get("/fhir/ImagingStudy?patient=x", headers=bearer(value))
    assert response.status_code == 403  # accepted, then refused: no access list for app@EHR
    assert response.get_json()["issue"][0]["code"] == "forbidden"


@responses.activate
def test_an_ehr_jwks_with_only_an_unusable_key_is_503_not_500(app):
    from smart.admin.issuers import add_issuer

    with app.app_context():
        add_issuer(EHR, SYSTEM, fhir_base=EHR + "/fhir")
    responses.get(EHR + "/.well-known/smart-configuration", json={"issuer": EHR, "jwks_uri": EHR + "/jwks"})
    responses.get(EHR + "/jwks", json={"keys": [ODD_CURVE]})
    response = app.test_client().get("/fhir/ImagingStudy", headers=bearer(_ehr_jwt(sub="s", scope="x")))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["resourceType"] == "OperationOutcome"


@responses.activate
def test_a_backend_clients_jwks_uri_with_an_unknown_curve_is_invalid_client_not_500(app):
    from smart.admin.cli import add_client

    with app.app_context():
        add_client("bulk", [], public=False, jwks_uri="https://bulk.example/jwks", scope="system/ImagingStudy.rs")
    responses.get("https://bulk.example/jwks", json={"keys": [ODD_CURVE]})
    now = int(time.time())
    signed = jwt.encode({"alg": "RS384", "kid": "k1"}, {
        "iss": "bulk", "sub": "bulk", "aud": "http://127.0.0.1:8080/auth/token", "exp": now + 240, "jti": str(now)},
        EHR_KEY, algorithms=["RS384"])
    response = app.test_client().post("/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/ImagingStudy.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion": signed})
    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


@responses.activate
def test_an_introspection_answer_without_aud_is_refused(app):
    """RFC 7662 makes ``aud`` optional in the answer; without it, the facade cannot tell a
    token for its FHIR base from one the EHR issued for its own API (RFC 8707): refused."""
    from smart.admin.issuers import add_issuer

    with app.app_context():
        add_issuer(EHR, SYSTEM, fhir_base=EHR + "/fhir", introspection_client_id="facade",
                   introspection_secret="s")
    responses.get(EHR + "/.well-known/smart-configuration",
                  json={"issuer": EHR, "jwks_uri": EHR + "/jwks", "introspection_endpoint": EHR + "/introspect"})
    responses.post(EHR + "/introspect", json={"active": True, "scope": "system/ImagingStudy.rs", "client_id": "app",
                                              "exp": int(time.time()) + 600})
    response = app.test_client().get("/fhir/ImagingStudy", headers=bearer("opaque-token-for-the-ehrs-own-api"))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert "not meant for this FHIR server" in response.headers["WWW-Authenticate"]


def test_a_launch_body_of_deeply_nested_json_is_an_invalid_request(fake_app):
    from test_launch_input import launch_token

    response = fake_app.test_client().post("/auth/launch", data="[" * 3000, content_type="application/json",
                                           headers=bearer(launch_token(fake_app)))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"
