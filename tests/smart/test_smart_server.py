"""Refresh tokens, introspection, revocation, EHR launch, confidential clients, CORS, discovery, CLI."""
from __future__ import annotations

import base64

import pytest

from access_helpers import allow
from facade_helpers import PUBLIC_URL

OFFLINE_SCOPE = "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Patient.rs offline_access"


@pytest.fixture
def alice(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    return auth


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def decode(app, token):
    from smart.tokens.jwt import decode_access_token

    with app.app_context():
        return decode_access_token(token)


# --- refresh (SA-4 after refresh) ---------------------------------------------------------------
def test_refresh_repeats_launch_context_twice(app, alice):
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    second = alice.refresh_response(first["refresh_token"])
    assert second.status_code == 200, second.get_data(as_text=True)
    assert second.headers["Cache-Control"] == "no-store"
    second = second.get_json()
    assert second["patient"] == "patient-1"
    assert second["scope"] == OFFLINE_SCOPE
    assert second["refresh_token"] != first["refresh_token"]
    assert decode(app, second["access_token"])["patient"] == "patient-1"
    # ONC kit refreshes twice: the rotated token works again.
    third = alice.refresh_response(second["refresh_token"]).get_json()
    assert third["patient"] == "patient-1"
    # The used one is spent.
    again = alice.refresh_response(first["refresh_token"])
    assert again.get_json()["error"] == "invalid_grant"


def test_refresh_token_replay_revokes_the_whole_family(app, alice):
    """RFC 9700 §4.14.2: a rotated refresh token presented again revokes every refresh and
    access token issued from that grant, and is answered invalid_grant."""
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    second = alice.refresh_response(first["refresh_token"]).get_json()
    third = alice.refresh_response(second["refresh_token"]).get_json()
    other = alice.obtain_token(scope=OFFLINE_SCOPE)  # another grant of the same user: untouched
    live = [first["access_token"], second["access_token"], third["access_token"]]
    for value in live:
        assert decode(app, value)["patient"] == "patient-1"

    replay = alice.refresh_response(second["refresh_token"])
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_grant"
    assert replay.headers["Cache-Control"] == "no-store"

    from smart.tokens.jwt import InvalidToken
    for value in live:
        with pytest.raises(InvalidToken, match="revoked"):
            decode(app, value)
        introspection = alice.client.post("/auth/introspect", data={"token": value},
                                          headers={"Authorization": f"Bearer {other['access_token']}"})
        assert introspection.get_json() == {"active": False}
    # The newest refresh token of the family, never used, is revoked too.
    assert alice.refresh_response(third["refresh_token"]).get_json()["error"] == "invalid_grant"
    # The other grant keeps working.
    assert decode(app, other["access_token"])["patient"] == "patient-1"
    assert alice.refresh_response(other["refresh_token"]).status_code == 200


def test_refresh_without_client_id_for_public_client(alice):
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    response = alice.client.post("/auth/token", data={"grant_type": "refresh_token",
                                                      "refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    assert response.get_json()["patient"] == "patient-1"


def test_refresh_scope_narrowing(alice):
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    narrowed = alice.refresh_response(first["refresh_token"], scope="patient/ImagingStudy.rs").get_json()
    assert narrowed["scope"] == "patient/ImagingStudy.rs"
    assert narrowed["patient"] == "patient-1"
    # The new refresh token keeps the original grant (RFC 6749 §6).
    wide = alice.refresh_response(narrowed["refresh_token"]).get_json()
    assert wide["scope"] == OFFLINE_SCOPE


def test_refresh_cannot_widen(alice):
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    response = alice.refresh_response(first["refresh_token"], scope="patient/*.cruds")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


@pytest.mark.parametrize("token", ["nope", "", "x" * 300])
def test_invalid_refresh_token(alice, token):
    alice.obtain_token(scope=OFFLINE_SCOPE)
    response = alice.refresh_response(token)
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_grant", "invalid_request")


def test_expired_refresh_token(alice, monkeypatch):
    import time

    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    later = time.time() + 91 * 24 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert alice.refresh_response(first["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_refresh_bound_to_client(alice):
    alice.register_public_client("other-app")
    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    response = alice.refresh_response(first["refresh_token"], client_id="other-app")
    assert response.get_json()["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_or_online_access(alice):
    assert "refresh_token" not in alice.obtain_token()


# --- confidential symmetric clients -----------------------------------------------------------
@pytest.mark.parametrize("use_basic", [True, False])
def test_confidential_client(app, auth, use_basic):
    auth.register_confidential_client("conf", "s3cret-value")
    auth.register_user()
    code = auth.authorize(client_id="conf")
    body = auth.exchange(code, client_id="conf", secret="s3cret-value", basic=use_basic)
    assert body["patient"] == "patient-1"


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_confidential_client_bad_secret(auth, secret):
    auth.register_confidential_client("conf", "s3cret-value")
    auth.register_user()
    code = auth.authorize(client_id="conf")
    response = auth.exchange_response(code, code.verifier, client_id="conf", secret=secret)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_client_secret_is_hashed(app, auth):
    from smart.oauth.server import query_client

    auth.register_confidential_client("conf", "s3cret-value")
    with app.app_context():
        stored = query_client("conf").client_secret_hash
    assert "s3cret-value" not in stored


# --- SA-5 introspection, revocation -------------------------------------------------------------
def confidential_token(auth, client_id="conf", secret="conf-secret", scope=OFFLINE_SCOPE):
    """A token response of confidential client *client_id* (registered on first use)."""
    from smart.oauth.server import query_client

    with auth.app.app_context():
        if query_client(client_id) is None:
            auth.register_confidential_client(client_id, secret)
    code = auth.authorize(client_id=client_id, scope=scope)
    return auth.exchange(code, client_id=client_id, secret=secret)


def test_introspection_active_and_inactive(alice):
    token = confidential_token(alice)
    body = alice.client.post("/auth/introspect", data={"token": token["access_token"]},
                             headers=basic("conf", "conf-secret")).get_json()
    assert body["active"] is True
    assert body["scope"] == OFFLINE_SCOPE
    assert body["client_id"] == "conf"
    assert body["patient"] == "patient-1"
    assert isinstance(body["exp"], int)
    refresh = alice.client.post("/auth/introspect", data={"token": token["refresh_token"]},
                                headers=basic("conf", "conf-secret")).get_json()
    assert refresh["active"] is True and refresh["patient"] == "patient-1"
    for unknown in ("nope", token["access_token"][:-4] + "AAAA"):
        response = alice.client.post("/auth/introspect", data={"token": unknown},
                                     headers=basic("conf", "conf-secret"))
        assert response.get_json() == {"active": False}


def test_introspection_only_of_the_callers_own_tokens(alice):
    """A bearer token or client credentials introspect only tokens of the same client_id;
    anything else is answered exactly like an unknown token (RFC 7662 §2.2, §4)."""
    from smart_flow import AuthActions

    alice.register_user("bob", "pw-bob", patient="patient-2")
    alice.register_public_client("other-app")
    alices = alice.obtain_token(scope=OFFLINE_SCOPE)
    bobs = AuthActions(alice.app.test_client()).obtain_token("bob", "pw-bob", scope=OFFLINE_SCOPE,
                                                              client_id="other-app")
    confs = confidential_token(AuthActions(alice.app.test_client()))
    callers = {
        "bob's bearer": {"Authorization": "Bearer " + bobs["access_token"]},
        "conf's credentials": basic("conf", "conf-secret"),
        "conf's bearer": {"Authorization": "Bearer " + confs["access_token"]},
    }
    for caller, headers in callers.items():
        for value in (alices["access_token"], alices["refresh_token"]):
            response = alice.client.post("/auth/introspect", data={"token": value}, headers=headers)
            assert response.status_code == 200, caller
            assert response.get_json() == {"active": False}, caller
    own = alice.client.post("/auth/introspect", data={"token": bobs["refresh_token"]},
                            headers=callers["bob's bearer"]).get_json()
    assert own["active"] is True and own["patient"] == "patient-2"


def test_introspection_with_bearer_token(alice):
    token = alice.obtain_token()
    response = alice.client.post("/auth/introspect", data={"token": token["access_token"]},
                                 headers={"Authorization": "Bearer " + token["access_token"]})
    assert response.get_json()["active"] is True


def test_introspection_needs_authentication(alice):
    token = alice.obtain_token()
    response = alice.client.post("/auth/introspect", data={"token": token["access_token"]})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_revoke_access_and_refresh_tokens(app, alice):
    from smart.tokens.jwt import InvalidToken

    token = alice.obtain_token(scope=OFFLINE_SCOPE)
    for value in (token["access_token"], token["refresh_token"]):
        response = alice.client.post("/auth/revoke", data={"token": value, "client_id": "test-app"})
        assert response.status_code == 200
    with pytest.raises(InvalidToken, match="revoked"):
        decode(app, token["access_token"])
    assert alice.refresh_response(token["refresh_token"]).get_json()["error"] == "invalid_grant"
    caller = alice.obtain_token()  # the same client may introspect its own tokens
    for value in (token["access_token"], token["refresh_token"]):
        body = alice.client.post("/auth/introspect", data={"token": value},
                                 headers={"Authorization": "Bearer " + caller["access_token"]}).get_json()
        assert body == {"active": False}


def test_revoke_other_clients_token_is_ignored(app, alice):
    alice.register_public_client("other-app")
    token = alice.obtain_token()
    response = alice.client.post("/auth/revoke", data={"token": token["access_token"], "client_id": "other-app"})
    assert response.status_code == 200
    assert decode(app, token["access_token"])["sub"] == "alice"


def test_revoke_unknown_token_is_200(alice):
    response = alice.client.post("/auth/revoke", data={"token": "nope", "client_id": "test-app"})
    assert response.status_code == 200


# --- EHR launch -----------------------------------------------------------------------------
def test_ehr_launch(app, auth):
    from smart.admin.cli import create_launch

    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    allow(app, ["patient-9"], username="dr")  # a practitioner's launch stays within their list
    with app.app_context():
        launch = create_launch(patient="patient-9", encounter="enc-1")  # need_patient_banner false by default
    code = auth.authorize("dr", "pw-dr", scope="launch openid fhirUser patient/ImagingStudy.rs", launch=launch)
    body = auth.exchange(code)
    assert body["patient"] == "patient-9"
    assert body["encounter"] == "enc-1"
    assert body["need_patient_banner"] is False
    assert decode(app, body["access_token"])["patient"] == "patient-9"
    # single use
    params, _ = auth.authorize_params(scope="launch patient/ImagingStudy.rs", launch=launch)
    response = auth.client.get("/auth/authorize", query_string=params)
    assert response.status_code == 302
    assert "error=invalid_request" in response.headers["Location"]


# --- discovery, CORS ------------------------------------------------------------------------
def test_discovery_same_at_both_urls(client):
    root = client.get("/.well-known/smart-configuration")
    fhir = client.get("/fhir/.well-known/smart-configuration")
    assert root.status_code == fhir.status_code == 200
    assert root.get_json() == fhir.get_json()
    body = root.get_json()
    assert body["issuer"] == PUBLIC_URL
    assert body["token_endpoint"] == PUBLIC_URL + "/auth/token"
    assert body["authorization_endpoint"] == PUBLIC_URL + "/auth/authorize"
    assert body["jwks_uri"] == PUBLIC_URL + "/.well-known/jwks.json"
    assert "smart-imaging-access" in body["capabilities"]
    assert {"http://fhir.org/argonaut/smart-imaging/capabilities/app-launch",
            "http://fhir.org/argonaut/smart-imaging/capabilities/backend-services"} <= set(body["capabilities"])
    assert body["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    oidc = client.get("/.well-known/openid-configuration").get_json()
    assert oidc["issuer"] == PUBLIC_URL and oidc["id_token_signing_alg_values_supported"] == ["RS256"]


def test_discovery_cors_any_origin(client):
    response = client.get("/.well-known/smart-configuration", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_token_cors_registered_origin_only(alice):
    ok = alice.client.options("/auth/token", headers={
        "Origin": "http://127.0.0.1:9999", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9999"
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    error = alice.client.post("/auth/token", data={"grant_type": "authorization_code", "code": "x"},
                              headers={"Origin": "http://127.0.0.1:9999"})
    assert error.status_code in (400, 401)
    assert error.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9999"
    other = alice.client.options("/auth/token", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize("data", [
    {},
    {"grant_type": "password", "username": "a", "password": "b"},
    {"grant_type": "client_credentials"},
    {"grant_type": "authorization_code"},
])
def test_token_endpoint_errors_are_oauth_json(alice, data):
    response = alice.client.post("/auth/token", data=data)
    assert response.status_code in (400, 401)
    assert "error" in response.get_json()
    assert response.headers["Cache-Control"] == "no-store"


def test_https_required_when_insecure_transport_off(app, alice):
    app.config["FACADE_INSECURE_TRANSPORT"] = "0"
    response = alice.client.post("/auth/token", data={"grant_type": "authorization_code", "code": "x"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "insecure_transport"
    page = alice.client.get("/auth/authorize", query_string=alice.authorize_params()[0])
    assert page.status_code == 400 and "Location" not in page.headers


# --- CLI -------------------------------------------------------------------------------------
def test_cli_add_client_and_user(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["smart", "add-client", "--client-id", "cli-app",
                                 "--redirect-uri", "https://app.example/cb",
                                 "--redirect-uri", "https://app.example/cb2", "--public"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["smart", "add-client", "--client-id", "cli-app",
                                "--redirect-uri", "https://app.example/cb"])
    assert again.exit_code != 0
    assert "already exists" in again.output and "Traceback" not in again.output
    result = runner.invoke(args=["smart", "add-user", "--username", "bob", "--password", "pw",
                                 "--patient", "patient-2"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["smart", "add-user", "--username", "bob", "--password", "pw",
                                "--patient", "patient-2"])
    assert again.exit_code != 0 and "already exists" in again.output
    launch = runner.invoke(args=["smart", "create-launch", "--patient", "patient-2"])
    assert launch.exit_code == 0 and len(launch.output.strip()) >= 20
    banner = runner.invoke(args=["smart", "create-launch", "--patient", "patient-2", "--banner"])
    assert banner.exit_code == 0
    from smart.store.models import LaunchContext

    with app.app_context():
        from smart.store.db import get_session

        rows = {row.launch_id: row.need_patient_banner for row in get_session().query(LaunchContext)}
    assert rows == {launch.output.strip(): False, banner.output.strip(): True}
    rotated = runner.invoke(args=["smart", "rotate-key"])
    assert rotated.exit_code == 0
    from smart.oauth.server import query_client

    with app.app_context():
        client = query_client("cli-app")
        assert client.redirect_uris == ["https://app.example/cb", "https://app.example/cb2"]
        assert client.is_public


def test_cli_secret_makes_confidential_client(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["smart", "add-client", "--client-id", "c2",
                                 "--redirect-uri", "https://app.example/cb", "--secret", "pw"])
    assert result.exit_code == 0, result.output
    from smart.oauth.server import query_client

    with app.app_context():
        assert query_client("c2").token_endpoint_auth_method == "client_secret_basic"


def test_init_db_command(tmp_path):
    from app import create_app

    url = f"sqlite:///{tmp_path}/sub/dir/facade.db"
    application = create_app({"TESTING": True, "FACADE_DATABASE_URL": url})
    result = application.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "dir" / "facade.db").exists()


def test_secret_key_persists_across_app_instances(app, alice):
    alice.authorize()
    from app import create_app

    again = create_app({"TESTING": True, "FACADE_DATABASE_URL": app.config["FACADE_DATABASE_URL"],
                        "FACADE_PUBLIC_URL": PUBLIC_URL})
    with again.test_request_context():
        assert again.session_interface.get_signing_serializer(again) is not None
    assert again.secret_key and again.secret_key == app.secret_key


# --- malformed input never gives a 500 ---------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("redirect_uri", 'http://x/"a'), ("redirect_uri", "http://x/\u00e9"), ("client_id", 'a"b'),
    ("client_id", "\u00e9"), ("response_type", 'co"de'), ("response_type", "token"), ("scope", 'pa"t'),
    ("state", '\u00e9"'), ("code_challenge_method", "\u00e9"), ("aud", '\u00e9"'), ("launch", '\u00e9"'),
    ("client_id", "x" * 5000),
])
def test_malformed_parameters_never_500(alice, field, value):
    params, _ = alice.authorize_params()
    params[field] = value
    assert alice.client.get("/auth/authorize", query_string=params).status_code < 500
    assert alice.client.post("/auth/authorize", data=params).status_code < 500
    posts = [
        ("/auth/token", {"grant_type": "authorization_code", "code": value, "client_id": value,
                         "redirect_uri": value, "code_verifier": value}),
        ("/auth/token", {"grant_type": value, "refresh_token": value}),
        ("/auth/token", {"grant_type": "refresh_token", "refresh_token": value, "client_id": value}),
        ("/auth/introspect", {"token": value}),
        ("/auth/revoke", {"token": value, "client_id": value}),
    ]
    for path, data in posts:
        response = alice.client.post(path, data=data)
        assert response.status_code < 500, (path, response.get_data(as_text=True)[:300])
        assert "error" in (response.get_json() or {}) or response.status_code == 200


def test_ehr_launch_for_another_user_is_refused(app, auth):
    from smart.admin.cli import create_launch

    auth.register_public_client()
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    with app.app_context():
        launch = create_launch(patient="patient-9", username="someone-else")
    params, _ = auth.authorize_params(scope="launch patient/ImagingStudy.rs", launch=launch)
    page = auth.client.get("/auth/authorize", query_string=params)
    # Refused as soon as the user is known, before the consent page.
    response = auth.login(page.get_data(as_text=True), "dr", "pw-dr")
    assert response.status_code == 302
    assert "error=access_denied" in response.headers["Location"]
    assert "code=" not in response.headers["Location"]


def test_no_tokens_or_secrets_in_logs(alice, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    alice.register_confidential_client("conf", "s3cret-value")
    token = alice.obtain_token(scope=OFFLINE_SCOPE)
    alice.refresh_response(token["refresh_token"])
    for secret in (token["access_token"], token["refresh_token"], token["id_token"], "s3cret-value",
                   "correct horse"):
        assert secret not in caplog.text


def test_two_refreshes_racing_with_one_token_cannot_both_win(app, alice, monkeypatch):
    """The second of two concurrent refreshes (simulated: the token is spent by another worker
    between its check and its rotation) is a replay: invalid_grant, and the grant is revoked."""
    from sqlalchemy import update

    from smart.oauth import grants
    from smart.store.db import get_database
    from smart.store.models import RefreshToken, now

    first = alice.obtain_token(scope=OFFLINE_SCOPE)
    original = grants.RefreshTokenGrant.authenticate_user

    def spent_meanwhile(self, refresh_token):
        with get_database().engine.begin() as conn:  # the other worker's rotation
            conn.execute(update(RefreshToken).where(RefreshToken.id == refresh_token.id).values(revoked_at=now()))
        return original(self, refresh_token)

    monkeypatch.setattr(grants.RefreshTokenGrant, "authenticate_user", spent_meanwhile)
    lost = alice.refresh_response(first["refresh_token"])
    assert lost.status_code == 400 and lost.get_json()["error"] == "invalid_grant"
    monkeypatch.setattr(grants.RefreshTokenGrant, "authenticate_user", original)
    from smart.tokens.jwt import InvalidToken
    with pytest.raises(InvalidToken):
        decode(app, first["access_token"])
