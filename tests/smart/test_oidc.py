"""OpenID Connect for browser viewers (issue 14): discovery, userinfo, prompt, remembered consent,
the apps page, RP-initiated logout, and clients with several redirect and post-logout URIs."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from access_helpers import allow
from facade_helpers import FHIR_BASE, PUBLIC_URL
from smart_flow import DEFAULT_REDIRECT_URI, DEFAULT_SCOPE, form_with_action, parse_forms

APP_ORIGIN = "http://127.0.0.1:9999"
LOGOUT_URI = APP_ORIGIN + "/signed-out"
OFFLINE = DEFAULT_SCOPE + " offline_access"


@pytest.fixture
def alice(app, auth):
    from smart.admin.cli import update_client

    auth.register_public_client()
    with app.app_context():
        update_client("test-app", add_post_logout_redirect_uris=[LOGOUT_URI])
    auth.register_user("alice", "correct horse", patient="patient-1")
    return auth


def query_of(response) -> dict:
    assert response.status_code == 302, response.get_data(as_text=True)
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def authorize(auth, **overrides):
    params, verifier = auth.authorize_params(**overrides)
    return auth.client.get("/auth/authorize", query_string=params), verifier


def is_login_page(response) -> bool:
    return response.status_code == 200 and 'name="password"' in response.get_data(as_text=True)


def is_consent_page(response) -> bool:
    html = response.get_data(as_text=True)
    return response.status_code == 200 and any(("action", "consent") in f["fields"] for f in parse_forms(html))


# --- discovery -------------------------------------------------------------------------------
def test_openid_configuration_lists_userinfo_logout_and_revocation(client):
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["userinfo_endpoint"] == PUBLIC_URL + "/auth/userinfo"
    assert metadata["end_session_endpoint"] == PUBLIC_URL + "/auth/logout"
    assert metadata["revocation_endpoint"] == PUBLIC_URL + "/auth/revoke"
    assert set(metadata["prompt_values_supported"]) == {"none", "login", "consent"}
    assert "fhirUser" in metadata["claims_supported"]


# --- userinfo --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_names_the_user(alice, method):
    body = alice.obtain_token()
    with responses.RequestsMock():  # the PACS knows no name: the username stands in
        answer = alice.client.open("/auth/userinfo", method=method,
                                   headers={"Authorization": "Bearer " + body["access_token"]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.get_json() == {"sub": "alice", "fhirUser": FHIR_BASE + "/Patient/patient-1",
                                 "name": "alice", "preferred_username": "alice"}


def test_userinfo_names_a_patient_user_as_the_pacs_does(alice):
    from dicom_json_builders import ds

    body = alice.obtain_token()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as pacs:
        pacs.add(responses.GET, "http://pacs.test/dicom-web/studies",
                 json=[ds(StudyInstanceUID="1.2.3", PatientID="patient-1", PatientName="Doe^Jane")])
        answer = alice.client.get("/auth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert answer.get_json()["name"] == "Jane Doe"
    assert answer.get_json()["preferred_username"] == "alice"


def test_userinfo_without_openid_is_insufficient_scope(alice):
    body = alice.obtain_token(scope="launch/patient patient/ImagingStudy.rs")
    answer = alice.client.get("/auth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert answer.status_code == 403
    assert answer.get_json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]


@pytest.mark.parametrize("header, error", [(None, None), ("Bearer not-a-jwt", "invalid_token"),
                                           ("Basic abc", "invalid_request")])
def test_userinfo_refuses_a_missing_or_bad_token(client, header, error):
    answer = client.get("/auth/userinfo", headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="smart"')
    assert (f'error="{error}"' in answer.headers["WWW-Authenticate"]) == bool(error)


def test_userinfo_answers_cors_from_a_registered_origin_only(alice):
    token = alice.obtain_token()["access_token"]
    headers = {"Authorization": "Bearer " + token}
    with responses.RequestsMock():
        ours = alice.client.get("/auth/userinfo", headers=headers | {"Origin": APP_ORIGIN})
        theirs = alice.client.get("/auth/userinfo", headers=headers | {"Origin": "https://evil.example"})
    assert ours.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Access-Control-Allow-Origin" not in theirs.headers
    preflight = alice.client.options("/auth/userinfo", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


def test_practitioner_gets_fhiruser_in_id_token_and_userinfo(app, auth):
    from joserfc import jwt
    from joserfc.jwk import KeySet

    auth.register_public_client()
    auth.register_user("dr.house", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-7"], username="dr.house")
    code = auth.authorize("dr.house", "pw-dr", patient="patient-7")
    body = auth.exchange(code)
    keys = KeySet.import_key_set(auth.client.get("/.well-known/jwks.json").get_json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["fhirUser"] == FHIR_BASE + "/Practitioner/dr.house"
    info = auth.client.get("/auth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert info.get_json()["fhirUser"] == FHIR_BASE + "/Practitioner/dr.house"
    assert info.get_json()["name"] == "dr.house"


def test_a_username_that_is_no_fhir_id_gets_a_digest_practitioner_id(app):
    from smart.store.models import User, digest

    user = User(username="Dr Ünlü", role="practitioner")
    assert user.fhir_user == "Practitioner/u-" + digest("Dr Ünlü")[:40]


# --- prompt=none (silent renew) --------------------------------------------------------------
def test_prompt_none_without_a_session_is_login_required(alice):
    response, _ = authorize(alice, prompt="none", state="s-1")
    query = query_of(response)
    assert query == {"error": "login_required", "state": "s-1", "error_description": query["error_description"]}
    assert response.headers["Content-Security-Policy"] == "frame-ancestors " + APP_ORIGIN
    assert "X-Frame-Options" not in response.headers


def test_prompt_none_with_a_session_but_no_consent_is_consent_required(alice):
    alice.authorize(scope="launch/patient openid patient/ImagingStudy.rs")
    response, _ = authorize(alice, prompt="none", state="s-2")  # asks for more scopes than approved
    query = query_of(response)
    assert query["error"] == "consent_required" and query["state"] == "s-2"
    assert "code" not in query


def test_prompt_none_with_session_and_consent_gives_a_code(alice):
    alice.authorize()
    response, verifier = authorize(alice, prompt="none", state="s-3")
    query = query_of(response)
    assert query["state"] == "s-3" and "error" not in query
    assert response.headers["Content-Security-Policy"] == "frame-ancestors " + APP_ORIGIN
    body = alice.exchange(query["code"], verifier)
    assert body["patient"] == "patient-1" and body["scope"] == DEFAULT_SCOPE


def test_prompt_none_with_the_id_token_hint_of_another_user_is_login_required(alice):
    mine = alice.obtain_token()["id_token"]
    assert "code" in query_of(authorize(alice, prompt="none", id_token_hint=mine)[0])
    alice.logout()
    alice.register_user("bob", "pw-bob", patient="patient-2")
    alice.authorize("bob", "pw-bob")
    for hint in (mine, "a.b.c"):
        assert query_of(authorize(alice, prompt="none", id_token_hint=hint)[0])["error"] == "login_required"


def test_prompt_none_for_a_practitioner_who_must_pick_is_interaction_required(app, auth):
    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-7"], username="dr")
    auth.authorize("dr", "pw-dr", patient="patient-7")
    assert query_of(authorize(auth, prompt="none")[0])["error"] == "interaction_required"
    again, _ = authorize(auth)  # the picker is still shown, consent remembered or not
    assert is_consent_page(again) and 'name="patient_query"' in again.get_data(as_text=True)


def test_prompt_none_with_another_value_is_invalid_request(alice):
    assert query_of(authorize(alice, prompt="none login")[0])["error"] == "invalid_request"


def test_prompt_none_never_redirects_to_an_unregistered_uri(alice):
    response, _ = authorize(alice, prompt="none", redirect_uri="https://evil.example/cb")
    assert response.status_code == 400 and "Location" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_and_ordinary_redirects_stay_unframeable(alice):
    page, _ = authorize(alice)
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    alice.authorize()
    redirect, _ = authorize(alice)  # remembered consent: a code, by an unframeable redirect
    assert "code" in query_of(redirect)
    assert redirect.headers["X-Frame-Options"] == "DENY"


# --- prompt=login / prompt=consent and remembered consent -----------------------------------
def test_remembered_consent_skips_the_page_for_the_same_or_fewer_scopes(alice):
    alice.authorize(scope=OFFLINE)
    fewer, _ = authorize(alice, scope=DEFAULT_SCOPE)
    assert "code" in query_of(fewer)
    more, _ = authorize(alice, scope=OFFLINE + " patient/Observation.rs")
    assert is_consent_page(more)


def test_consent_is_per_client(alice):
    alice.authorize()
    alice.register_public_client("other-app")
    assert is_consent_page(authorize(alice, client_id="other-app")[0])


def test_consent_is_per_user(alice):
    alice.authorize()
    alice.logout()
    alice.register_user("bob", "pw-bob", patient="patient-2")
    page, _ = authorize(alice)
    assert is_consent_page(alice.login(page.get_data(as_text=True), "bob", "pw-bob"))


def test_deselected_scopes_are_not_remembered(alice):
    scope = DEFAULT_SCOPE + " patient/Observation.rs"
    alice.authorize(scope=scope, deselect=("patient/Observation.rs",))
    assert is_consent_page(authorize(alice, scope=scope)[0])
    assert "code" in query_of(authorize(alice)[0])


def test_prompt_consent_shows_the_page_and_prompt_login_the_login(alice):
    alice.authorize()
    assert is_consent_page(authorize(alice, prompt="consent")[0])
    login, _ = authorize(alice, prompt="login")
    assert is_login_page(login)
    after = alice.login(login.get_data(as_text=True), "alice", "correct horse")
    assert "code" in query_of(after)  # signed in again; the consent was remembered


def test_max_age_asks_for_a_newer_login(alice, monkeypatch):
    from smart.web import prompts

    alice.authorize()
    assert "code" in query_of(authorize(alice, max_age="60")[0])
    monkeypatch.setattr(prompts, "now", lambda: int(time.time()) + 120)  # two minutes later
    assert query_of(authorize(alice, prompt="none", max_age="60")[0])["error"] == "login_required"
    assert is_login_page(authorize(alice, max_age="60")[0])
    assert "code" in query_of(authorize(alice, max_age="600")[0])
    assert "code" in query_of(authorize(alice, max_age="soon")[0])  # malformed: ignored


def test_remembered_consent_keeps_the_ehr_launch_context(app, auth):
    from smart.admin.cli import create_launch

    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-9"], username="dr")
    scope = "launch openid fhirUser patient/ImagingStudy.rs"
    with app.app_context():
        first, second = create_launch(patient="patient-9"), create_launch(patient="patient-9", encounter="e-2")
    auth.exchange(auth.authorize("dr", "pw-dr", scope=scope, launch=first))
    response, verifier = authorize(auth, scope=scope, launch=second)
    body = auth.exchange(query_of(response)["code"], verifier)
    assert body["patient"] == "patient-9" and body["encounter"] == "e-2"
    assert body["need_patient_banner"] is False


# --- the apps page ---------------------------------------------------------------------------
def test_apps_page_asks_for_a_login_then_lists_the_approved_apps(alice):
    alice.authorize()
    alice.logout()
    page = alice.client.get("/auth/apps")
    assert is_login_page(page)
    assert page.headers["X-Frame-Options"] == "DENY"
    signed_in = alice.submit(page.get_data(as_text=True), "login", {"username": "alice", "password": "correct horse"})
    assert signed_in.status_code == 303 and signed_in.headers["Location"].endswith("/auth/apps")
    listing = alice.client.get("/auth/apps").get_data(as_text=True)
    assert "test-app" in listing and "patient/ImagingStudy.rs" in listing


def test_withdrawing_an_app_revokes_its_tokens_and_forgets_the_consent(alice):
    body = alice.obtain_token(scope=OFFLINE)
    headers = {"Authorization": "Bearer " + body["access_token"]}
    page = alice.client.get("/auth/apps").get_data(as_text=True)
    form = form_with_action(page, "withdraw")
    assert ("client_id", "test-app") in form["fields"]
    done = alice.submit(page, "withdraw")
    assert done.status_code == 200 and "Access withdrawn" in done.get_data(as_text=True)
    assert "Withdraw</button>" not in done.get_data(as_text=True)
    refreshed = alice.refresh_response(body["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
    assert alice.client.get("/auth/userinfo", headers=headers).status_code == 401
    assert is_consent_page(authorize(alice, scope=OFFLINE)[0])


def test_withdrawing_one_app_leaves_the_others_alone(alice):
    alice.register_public_client("other-app")
    other = alice.obtain_token(scope=OFFLINE, client_id="other-app")
    alice.obtain_token(scope=OFFLINE)
    page = alice.client.get("/auth/apps").get_data(as_text=True)
    withdraw = next(f for f in parse_forms(page) if ("client_id", "test-app") in f["fields"])
    assert alice.client.post(withdraw["action"], data=dict(withdraw["fields"])).status_code == 200
    assert alice.refresh_response(other["refresh_token"], client_id="other-app").status_code == 200
    assert "code" in query_of(authorize(alice, client_id="other-app")[0])


def test_withdrawing_without_the_csrf_token_changes_nothing(alice):
    alice.authorize()
    refused = alice.client.post("/auth/apps", data={"action": "withdraw", "client_id": "test-app"})
    assert refused.status_code == 400
    assert "code" in query_of(authorize(alice)[0])  # the consent is still remembered


def test_withdrawing_an_unknown_app_is_404(alice):
    alice.authorize()
    page = alice.client.get("/auth/apps").get_data(as_text=True)
    assert alice.submit(page, "withdraw", {"client_id": "nobody"}).status_code == 404


# --- RP-initiated logout ---------------------------------------------------------------------
def signed_in(auth) -> bool:
    """Whether the browser still has its login session (a silent authorize gets a code)."""
    return "code" in query_of(authorize(auth, prompt="none")[0])


def is_confirm_page(response) -> bool:
    html = response.get_data(as_text=True)
    return "Sign out?" in html and any(("action", "logout") in f["fields"] for f in parse_forms(html))


def confirm(auth, response, decision="sign_out", **overrides):
    """Answer the "Sign out?" page as the user's browser does."""
    return auth.submit(response.get_data(as_text=True), "logout", overrides, button=("decision", decision))


def test_logout_with_id_token_hint_redirects_with_state_and_ends_the_session(alice):
    body = alice.obtain_token()
    response = alice.client.get("/auth/logout", query_string={
        "id_token_hint": body["id_token"], "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"})
    assert response.status_code == 302
    assert response.headers["Location"] == LOGOUT_URI + "?state=bye"
    assert is_login_page(authorize(alice)[0])  # the next visit asks for the login
    assert query_of(authorize(alice, prompt="none")[0])["error"] == "login_required"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_without_a_hint_asks_first_and_signs_nobody_out(alice, method):
    # Any site can send the browser here (an <img>, an auto-submitted form): it must not sign out.
    alice.authorize()
    response = alice.client.open("/auth/logout", method=method, data={
        "client_id": "test-app", "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"})
    assert response.status_code == 200 and is_confirm_page(response)
    assert "Location" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert "alice" in response.get_data(as_text=True)
    assert signed_in(alice)


def test_confirmed_logout_redirects_to_the_registered_uri_with_state(alice):
    alice.authorize()
    page = alice.client.get("/auth/logout", query_string={
        "client_id": "test-app", "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"})
    form = form_with_action(page.get_data(as_text=True), "logout")
    assert {name for name, _ in form["fields"]} == {"post_logout_redirect_uri", "client_id", "state", "csrf_token",
                                                    "action"}
    response = confirm(alice, page)
    assert response.status_code == 302 and response.headers["Location"] == LOGOUT_URI + "?state=bye"
    assert not signed_in(alice)


def test_confirmed_logout_without_a_redirect_shows_the_signed_out_page(alice):
    alice.authorize()
    page = alice.client.get("/auth/logout")
    assert is_confirm_page(page)
    response = confirm(alice, page)
    assert response.status_code == 200 and "You are signed out" in response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert not signed_in(alice)


def test_logout_with_the_hint_of_another_user_asks_and_keeps_no_token_in_the_page(alice):
    alices = alice.obtain_token()["id_token"]  # then bob signs in on this browser
    alice.logout()
    alice.register_user("bob", "pw-bob", patient="patient-2")
    alice.authorize("bob", "pw-bob")
    page = alice.client.get("/auth/logout", query_string={"id_token_hint": alices,
                                                          "post_logout_redirect_uri": LOGOUT_URI})
    assert is_confirm_page(page) and signed_in(alice)
    assert alices not in page.get_data(as_text=True)
    # The hint still names the client: its registered URI is where the confirmed logout goes.
    assert ("client_id", "test-app") in form_with_action(page.get_data(as_text=True), "logout")["fields"]
    response = confirm(alice, page)
    assert response.headers["Location"] == LOGOUT_URI
    assert not signed_in(alice)


def test_cancel_keeps_the_session(alice):
    alice.authorize()
    page = alice.client.get("/auth/logout", query_string={"client_id": "test-app",
                                                          "post_logout_redirect_uri": LOGOUT_URI})
    response = confirm(alice, page, decision="cancel")
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are still signed in" in response.get_data(as_text=True)
    assert signed_in(alice)


@pytest.mark.parametrize("csrf_token", [None, "", "forged"])
def test_a_confirmation_without_the_sessions_csrf_token_signs_nobody_out(alice, csrf_token):
    alice.authorize()
    data = {"action": "logout", "decision": "sign_out", "client_id": "test-app", "post_logout_redirect_uri": LOGOUT_URI}
    if csrf_token is not None:
        data["csrf_token"] = csrf_token
    response = alice.client.post("/auth/logout", data=data)
    assert response.status_code == 400 and is_confirm_page(response)
    assert "Location" not in response.headers and "expired" in response.get_data(as_text=True)
    assert signed_in(alice)


def test_logout_without_a_session_needs_no_confirmation(alice):
    response = alice.client.get("/auth/logout", query_string={
        "client_id": "test-app", "post_logout_redirect_uri": LOGOUT_URI, "state": "s"})
    assert response.status_code == 302 and response.headers["Location"] == LOGOUT_URI + "?state=s"
    page = alice.client.get("/auth/logout")
    assert page.status_code == 200 and "You are signed out" in page.get_data(as_text=True)
    assert not is_confirm_page(page)


def test_the_apps_pages_sign_out_button_signs_out_at_once(alice):
    alice.authorize()
    page = alice.client.get("/auth/apps").get_data(as_text=True)
    response = alice.submit(page, "logout", button=("decision", "sign_out"))
    assert response.status_code == 200 and "You are signed out" in response.get_data(as_text=True)
    assert not signed_in(alice)


UNPROVEN = [
    {"client_id": "test-app", "post_logout_redirect_uri": "https://evil.example/out"},
    {"client_id": "test-app", "post_logout_redirect_uri": DEFAULT_REDIRECT_URI},  # a redirect URI, not a logout one
    {"post_logout_redirect_uri": LOGOUT_URI},                                      # whose URI?
    {"id_token_hint": "a.b.c", "post_logout_redirect_uri": LOGOUT_URI},
    {"id_token_hint": "a.b.c", "client_id": "test-app", "post_logout_redirect_uri": LOGOUT_URI},
]


@pytest.mark.parametrize("params", UNPROVEN)
def test_confirmed_logout_never_redirects_to_an_unproven_uri(alice, params):
    alice.authorize()
    page = alice.client.get("/auth/logout", query_string=params)
    assert page.status_code == 400 and is_confirm_page(page) and "Location" not in page.headers
    assert "not be sent back" in page.get_data(as_text=True)
    form = form_with_action(page.get_data(as_text=True), "logout")
    assert {name for name, _ in form["fields"]} == {"csrf_token", "action"}  # the refused redirect is dropped
    response = confirm(alice, page)
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are signed out" in response.get_data(as_text=True)
    assert not signed_in(alice)


@pytest.mark.parametrize("params", UNPROVEN)
def test_logout_without_a_session_never_redirects_to_an_unproven_uri(client, params):
    response = client.get("/auth/logout", query_string=params)
    assert response.status_code == 400 and "Location" not in response.headers
    assert "You are signed out" in response.get_data(as_text=True)


def test_logout_with_the_users_hint_for_another_client_signs_out_but_refuses_the_redirect(alice):
    body = alice.obtain_token()
    response = alice.client.get("/auth/logout", query_string={
        "id_token_hint": body["id_token"], "client_id": "other-app", "post_logout_redirect_uri": LOGOUT_URI})
    assert response.status_code == 400 and "Location" not in response.headers
    assert "You are signed out" in response.get_data(as_text=True)
    assert is_login_page(authorize(alice)[0])


# --- clients with several redirect and post-logout URIs (CLI) ---------------------------------
def test_cli_update_client_adds_and_removes_uris(app):
    runner = app.test_cli_runner()
    added = runner.invoke(args=["smart", "add-client", "--client-id", "viewer", "--redirect-uri", "https://v.example/cb",
                                "--redirect-uri", "https://v.example/silent", "--post-logout-redirect-uri",
                                "https://v.example/out"])
    assert added.exit_code == 0, added.output
    changed = runner.invoke(args=["smart", "update-client", "--client-id", "viewer",
                                  "--add-redirect-uri", "https://w.example/cb", "--remove-redirect-uri",
                                  "https://v.example/silent", "--add-post-logout-redirect-uri", "https://w.example/out",
                                  "--remove-post-logout-redirect-uri", "https://v.example/out"])
    assert changed.exit_code == 0, changed.output
    from smart.oauth.cors import registered_origins
    from smart.oauth.server import query_client

    with app.app_context():
        client = query_client("viewer")
        assert client.redirect_uris == ["https://v.example/cb", "https://w.example/cb"]
        assert client.post_logout_redirect_uris == ["https://w.example/out"]
        assert "https://w.example" in registered_origins()


@pytest.mark.parametrize("args, message", [
    (["--client-id", "nobody", "--add-redirect-uri", "https://x.example/cb"], "no client 'nobody'"),
    (["--client-id", "viewer", "--remove-redirect-uri", "https://x.example/cb"], "is not registered"),
    (["--client-id", "viewer", "--remove-redirect-uri", "https://v.example/cb"], "at least one redirect URI"),
    (["--client-id", "viewer", "--add-post-logout-redirect-uri", "https://x.example/out#f"], "without a fragment"),
])
def test_cli_update_client_refuses_bad_changes(app, args, message):
    runner = app.test_cli_runner()
    runner.invoke(args=["smart", "add-client", "--client-id", "viewer", "--redirect-uri", "https://v.example/cb"])
    result = runner.invoke(args=["smart", "update-client", *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


# --- nothing secret in the logs --------------------------------------------------------------
def test_no_token_or_patient_reaches_the_log(alice, caplog):
    import logging

    # The PACS is faked (unanswered): urllib3's own retry warnings name the request URL.
    with caplog.at_level(logging.DEBUG), responses.RequestsMock():
        body = alice.obtain_token(scope=OFFLINE, nonce="n-secret-nonce")
        alice.client.get("/auth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
        authorize(alice, prompt="none")
        page = alice.client.get("/auth/apps").get_data(as_text=True)
        alice.submit(page, "withdraw")
        alice.client.get("/auth/logout", query_string={"id_token_hint": body["id_token"],
                                                        "post_logout_redirect_uri": LOGOUT_URI, "state": "s"})
    text = caplog.text
    assert "/auth/logout" in text  # the access log ran
    for secret in (body["access_token"], body["id_token"], body["refresh_token"], "patient-1", "correct horse",
                   "n-secret-nonce"):
        assert secret not in text
