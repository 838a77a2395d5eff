"""Login on the authorization page: no username enumeration by timing, failed logins throttled."""
from __future__ import annotations

import pytest

from fixtures_app import *  # noqa: F401,F403
from smart_flow import AuthActions

GENERIC = "Unknown username or wrong password."


@pytest.fixture
def users(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    auth.register_user("bob", "battery staple", patient="patient-2")
    return auth


def attempt(app, username, password, ip="203.0.113.7"):
    """One login from a fresh browser at *ip*; returns the response to the login form."""
    browser = AuthActions(app.test_client())
    browser.client.environ_base["REMOTE_ADDR"] = ip
    params, _ = browser.authorize_params()
    page = browser.client.get("/auth/authorize", query_string=params)
    return browser.login(page.get_data(as_text=True), username, password)


def logged_in(response) -> bool:
    return response.status_code == 200 and 'value="consent"' in response.get_data(as_text=True)


def refused(response) -> bool:
    return response.status_code == 401 and GENERIC in response.get_data(as_text=True)


def test_unknown_user_costs_one_password_hash_of_the_same_scheme(app, users, monkeypatch):
    """An unknown username is checked against a dummy hash of the real scheme, so it takes as
    long as a wrong password for a known one (no enumeration by timing)."""
    import werkzeug.security

    from smart.db import get_session
    from smart.models import User

    checked = []
    real = werkzeug.security.check_password_hash

    def spy(pwhash, password):
        checked.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    import smart.login
    import smart.models
    monkeypatch.setattr(smart.models, "check_password_hash", spy)
    monkeypatch.setattr(smart.login, "check_password_hash", spy)
    with app.app_context():
        scheme = get_session().query(User).filter_by(username="alice").one().password_hash.split("$", 1)[0]
    assert refused(attempt(app, "alice", "wrong"))
    assert refused(attempt(app, "nobody-here", "wrong"))
    assert checked == [scheme, scheme]


def test_five_failures_lock_the_username(app, users):
    for _ in range(5):
        assert refused(attempt(app, "alice", "wrong"))
    # The right password no longer works for a while, with the same generic answer ...
    assert refused(attempt(app, "alice", "correct horse"))
    assert refused(attempt(app, "alice", "correct horse", ip="198.51.100.1"))
    # ... while other users are unaffected.
    assert logged_in(attempt(app, "bob", "battery staple"))


def test_lock_expires(app, users, monkeypatch):
    import smart.login

    for _ in range(5):
        attempt(app, "alice", "wrong")
    assert refused(attempt(app, "alice", "correct horse"))
    later = smart.login.now() + smart.login.FAILURE_WINDOW + 1
    monkeypatch.setattr(smart.login, "now", lambda: later)
    assert logged_in(attempt(app, "alice", "correct horse"))


def test_unknown_usernames_are_locked_alike(app, users):
    for _ in range(5):
        assert refused(attempt(app, "nobody-here", "wrong"))
    assert refused(attempt(app, "nobody-here", "wrong"))


def test_success_clears_the_username_count(app, users):
    for _ in range(4):
        attempt(app, "alice", "wrong")
    assert logged_in(attempt(app, "alice", "correct horse"))
    for _ in range(4):
        attempt(app, "alice", "wrong")
    assert logged_in(attempt(app, "alice", "correct horse"))


def test_many_failures_from_one_address_lock_that_address(app, users):
    import smart.login

    for n in range(smart.login.MAX_ADDRESS_FAILURES):
        assert refused(attempt(app, f"guess-{n % 4}", "wrong", ip="192.0.2.66"))
    assert refused(attempt(app, "bob", "battery staple", ip="192.0.2.66"))
    assert logged_in(attempt(app, "bob", "battery staple", ip="192.0.2.67"))


def test_failures_are_shared_through_the_database(app, users, tmp_path):
    """Another app instance (another worker) on the same database sees the same lock."""
    from app import create_app

    for _ in range(5):
        attempt(app, "alice", "wrong")
    other = create_app({"TESTING": True, "FACADE_DATABASE_URL": app.config["FACADE_DATABASE_URL"],
                        "FACADE_PUBLIC_URL": app.config["FACADE_PUBLIC_URL"]})
    assert refused(attempt(other, "alice", "correct horse"))
    other.extensions["smart_db"].engine.dispose()


def test_requests_without_a_session_cookie_get_an_empty_session_without_the_key(app, monkeypatch):
    """FHIR and DICOMweb requests carry no cookie: no signing serializer is built for them."""
    from flask.sessions import SecureCookieSession

    interface = app.session_interface

    def refuse(_app):
        raise AssertionError("signing serializer built for a request without a session cookie")

    with app.test_request_context("/fhir/metadata"):
        monkeypatch.setattr(interface, "get_signing_serializer", refuse)
        from flask import request
        session = interface.open_session(app, request)
    assert type(session) is SecureCookieSession and dict(session) == {} and not session.modified


def test_a_forged_session_cookie_opens_an_empty_session(app):
    from flask import request
    name = app.config["SESSION_COOKIE_NAME"]
    with app.test_request_context("/smart/authorize", headers={"Cookie": f"{name}=eyJ1c2VyX2lkIjoxfQ.forged.sig"}):
        session = app.session_interface.open_session(app, request)
    assert dict(session) == {}


def test_a_signed_session_cookie_is_read_back(app):
    from flask import request
    interface = app.session_interface
    with app.test_request_context("/"):
        cookie = interface.get_signing_serializer(app).dumps({"user_id": 7})
    with app.test_request_context("/", headers={"Cookie": f"{app.config['SESSION_COOKIE_NAME']}={cookie}"}):
        assert interface.open_session(app, request)["user_id"] == 7
