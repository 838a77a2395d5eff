"""End-to-end SMART authorization code flow: standalone launch, PKCE, redirect_uri, aud, code reuse."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from facade_helpers import FHIR_BASE, PUBLIC_URL
from access_helpers import allow
from smart_flow import DEFAULT_REDIRECT_URI, DEFAULT_SCOPE, make_verifier, s256


@pytest.fixture
def alice(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    return auth


def decode(app, token):
    from smart.tokens.jwt import decode_access_token

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


def _authorize_page(client, auth, **overrides):
    params, verifier = auth.authorize_params(**overrides)
    params = {k: v for k, v in params.items() if v != ""}
    return client.get("/auth/authorize", query_string=params), verifier


# --- SA-1 redirect_uri ----------------------------------------------------------------------
@pytest.mark.parametrize("redirect_uri", [
    DEFAULT_REDIRECT_URI + "/",                       # trailing slash
    DEFAULT_REDIRECT_URI.upper(),                     # case
    DEFAULT_REDIRECT_URI + "?x=1",                    # extra query
    "http://127.0.0.1:9999/callbackx",                # prefix match
    "http://evil.example/callback",
    None,                                             # missing: SMART requires it
])
def test_unregistered_redirect_uri_shows_error_page_never_redirects(client, alice, redirect_uri):
    params, _ = alice.authorize_params()
    if redirect_uri is None:
        del params["redirect_uri"]
    else:
        params["redirect_uri"] = redirect_uri
    response = client.get("/auth/authorize", query_string=params)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "invalid_request" in response.get_data(as_text=True)


def test_unknown_client_shows_error_page(client, alice):
    response, _ = _authorize_page(client, alice, client_id="nobody")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "invalid_client" in response.get_data(as_text=True)


def test_unregistered_redirect_uri_after_login_is_still_refused(client, alice):
    alice.authorize()  # logs alice in on this browser session
    params, _ = alice.authorize_params(redirect_uri=DEFAULT_REDIRECT_URI + "/")
    response = client.post("/auth/authorize", data=params)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_token_redirect_uri_must_match_authorize(alice):
    code = alice.authorize()
    response = alice.exchange_response(code, code.verifier, redirect_uri=DEFAULT_REDIRECT_URI + "/")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_token_without_redirect_uri_is_refused(alice):
    code = alice.authorize()
    response = alice.exchange_response(code, code.verifier, redirect_uri=None)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_custom_scheme_redirect_uri(auth):
    auth.register_public_client("mobile", ("com.example.app:/oauth2redirect",))
    auth.register_user()
    code = auth.authorize(client_id="mobile", redirect_uri="com.example.app:/oauth2redirect")
    assert code.location.startswith("com.example.app:/oauth2redirect?code=")
    body = auth.exchange(code, client_id="mobile", redirect_uri="com.example.app:/oauth2redirect")
    assert body["patient"] == "patient-1"


# --- SA-2 PKCE ------------------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"code_challenge": None, "code_challenge_method": None},   # no PKCE at all
    {"code_challenge": None},                                  # method without challenge
    {"code_challenge_method": None},                           # challenge without method (= plain)
    {"code_challenge_method": "plain"},
    {"code_challenge_method": "s256"},
    {"code_challenge": "too-short"},
])
def test_authorize_refuses_bad_pkce(client, alice, change):
    params, _ = alice.authorize_params()
    for name, value in change.items():
        if value is None:
            params.pop(name)
        else:
            params[name] = value
    response = client.get("/auth/authorize", query_string=params)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == [params["state"]]
    assert "code" not in query


def test_discovery_lists_only_s256(client):
    body = client.get("/.well-known/smart-configuration").get_json()
    assert body["code_challenge_methods_supported"] == ["S256"]


@pytest.mark.parametrize("verifier_kind, error", [
    ("wrong", "invalid_grant"),
    ("missing", "invalid_request"),
    ("challenge", "invalid_grant"),
    ("malformed", "invalid_request"),
])
def test_token_refuses_bad_verifier(alice, verifier_kind, error):
    code = alice.authorize()
    verifier = {
        "wrong": make_verifier(),
        "missing": None,
        "challenge": s256(code.verifier),
        "malformed": "short",
    }[verifier_kind]
    response = alice.exchange_response(code, verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] == error
    assert "access_token" not in response.get_json()


def test_code_works_once(app, alice):
    code = alice.authorize()
    first = alice.exchange(code)
    second = alice.exchange_response(code, code.verifier)
    assert second.status_code == 400
    assert second.get_json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: tokens issued from a replayed code are revoked.
    from smart.tokens.jwt import InvalidToken

    with pytest.raises(InvalidToken, match="revoked"):
        decode(app, first["access_token"])


def test_code_expires(app, alice, monkeypatch):
    code = alice.authorize()
    import time

    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    response = alice.exchange_response(code, code.verifier)
    assert response.get_json()["error"] == "invalid_grant"


def test_code_bound_to_client(alice):
    alice.register_public_client("other-app")
    code = alice.authorize()
    response = alice.exchange_response(code, code.verifier, client_id="other-app")
    assert response.get_json()["error"] == "invalid_grant"


def test_unknown_code(alice):
    response = alice.exchange_response("not-a-code", make_verifier())
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_unknown_client_at_token_endpoint(alice):
    code = alice.authorize()
    response = alice.exchange_response(code, code.verifier, client_id="nobody")
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


# --- aud --------------------------------------------------------------------------------------
@pytest.mark.parametrize("aud", ["https://evil.example/fhir", PUBLIC_URL, FHIR_BASE + "x"])
def test_wrong_aud_gives_no_code(client, alice, aud):
    alice.authorize()  # logged in, so only aud can stop the code
    params, _ = alice.authorize_params(aud=aud)
    response = client.get("/auth/authorize", query_string=params)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


@pytest.mark.parametrize("omit", ["absent", "empty"])
def test_no_aud_binds_the_token_to_this_fhir_base(app, client, alice, omit):
    """Issue 14: an OpenID Connect client (OHIF) sends no aud; its token is for our FHIR base."""
    alice.authorize()
    params, verifier = alice.authorize_params(aud="", state="s-no-aud")
    if omit == "absent":
        params.pop("aud")
    page = client.get("/auth/authorize", query_string=params)  # consent remembered: a code at once
    assert page.status_code == 302, page.get_data(as_text=True)
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    assert query["state"] == ["s-no-aud"]
    body = alice.exchange(query["code"][0], verifier)
    claims = decode(app, body["access_token"])
    assert claims["aud"] == FHIR_BASE


# --- SA-4 launch context & scope ---------------------------------------------------------------
def test_launch_context_top_level_and_granted_subset(app, alice):
    scope = "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Observation.rs offline_access"
    code = alice.authorize(scope=scope, deselect=("patient/Observation.rs",))
    body = alice.exchange(code)
    assert body["patient"] == "patient-1"
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"] == PUBLIC_URL + "/auth/smart-style.json"
    assert body["scope"] == "launch/patient openid fhirUser patient/ImagingStudy.rs offline_access"
    assert set(body["scope"].split()) <= set(scope.split())
    assert "refresh_token" in body
    assert decode(app, body["access_token"])["scope"] == body["scope"]


def test_invalid_scopes_are_not_granted(alice):
    body = alice.obtain_token(scope="launch/patient patient/ImagingStudy.sr patient/ImagingStudy.rs bogus")
    assert body["scope"] == "launch/patient patient/ImagingStudy.rs"


def test_id_token(app, alice):
    from joserfc import jwt
    from joserfc.jwk import KeySet

    code = alice.authorize(nonce="n-0S6_WzA2Mj")
    body = alice.exchange(code)
    jwks = app.test_client().get("/.well-known/jwks.json").get_json()
    token = jwt.decode(body["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert token.header["kid"] in {k["kid"] for k in jwks["keys"]}
    claims = token.claims
    assert claims["aud"] == "test-app"
    assert claims["iss"] == PUBLIC_URL
    assert claims["sub"] == "alice"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["fhirUser"] == FHIR_BASE + "/Patient/patient-1"


def test_practitioner_picks_patient(app, auth):
    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-7"], username="dr")
    code = auth.authorize("dr", "pw-dr", patient="patient-7")
    body = auth.exchange(code)
    assert body["patient"] == "patient-7"
    assert decode(app, body["access_token"])["patient"] == "patient-7"


def test_practitioner_cannot_pick_a_patient_outside_their_access_list(app, auth):
    """Issue 12: the picker is no way around ``smart grant-access --username``."""
    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-7"], username="dr")
    with pytest.raises(AssertionError, match="no access to this patient") as refused:
        auth.authorize("dr", "pw-dr", patient="patient-8")  # the consent page again, no redirect
    assert "code=" not in str(refused.value)


def test_deny_redirects_access_denied(alice):
    params, _ = alice.authorize_params(state="s1")
    page = alice.client.get("/auth/authorize", query_string=params)
    page = alice.login(page.get_data(as_text=True), "alice", "correct horse")
    response = alice.submit(page.get_data(as_text=True), "consent", button=("decision", "deny"))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s1"]
    assert "code" not in query


def test_wrong_password_shows_login_again(alice):
    params, _ = alice.authorize_params()
    page = alice.client.get("/auth/authorize", query_string=params)
    response = alice.login(page.get_data(as_text=True), "alice", "wrong")
    assert response.status_code == 401
    assert 'name="password"' in response.get_data(as_text=True)
    assert "Location" not in response.headers


def test_consent_without_csrf_token_is_refused(alice):
    alice.authorize()
    params, _ = alice.authorize_params()
    params.update(action="consent", decision="approve")
    response = alice.client.post("/auth/authorize", data=params)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_authorize_post(client, alice):
    params, _ = alice.authorize_params()
    response = client.post("/auth/authorize", data=params)
    assert response.status_code == 200
    assert 'name="username"' in response.get_data(as_text=True)
