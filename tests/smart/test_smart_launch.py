"""EHR launch (SMART 2.2 §EHR launch) with patient users: the consent page shows the patient
the token will carry, and a launch that cannot apply to the user is refused up front."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from access_helpers import allow
from smart_flow import DEFAULT_REDIRECT_URI, AuthActions

SCOPE = "launch openid fhirUser patient/ImagingStudy.rs"


@pytest.fixture
def people(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    return auth


def launch_for(app, **kwargs) -> str:
    from smart.admin.cli import create_launch

    with app.app_context():
        return create_launch(**kwargs)


def after_login(auth, launch, username, password, scope=SCOPE):
    """The response to the login form of an EHR launch (its ``verifier`` attached)."""
    params, verifier = auth.authorize_params(scope=scope, launch=launch, state="st-1")
    page = auth.client.get("/auth/authorize", query_string=params)
    response = auth.login(page.get_data(as_text=True), username, password)
    response.verifier = verifier
    return response


def context_line(html: str) -> str:
    start = html.find('<p class="context">')
    return html[start:html.find("</p>", start)] if start >= 0 else ""


def assert_refused_up_front(response):
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(DEFAULT_REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"]
    assert "code" not in query


def test_patient_user_launch_for_own_record_shows_it(app, people):
    launch = launch_for(app, patient="patient-1")
    page = after_login(people, launch, "alice", "correct horse")
    assert page.status_code == 200
    assert "patient-1" in context_line(page.get_data(as_text=True))
    response = people.submit(page.get_data(as_text=True), "consent", button=("decision", "approve"))
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    assert people.exchange(code, page.verifier)["patient"] == "patient-1"


def test_patient_user_launch_for_another_patient_is_refused_before_consent(app, people):
    launch = launch_for(app, patient="patient-9")
    response = after_login(people, launch, "alice", "correct horse")
    assert_refused_up_front(response)
    assert "patient-9" not in response.get_data(as_text=True)


def test_launch_bound_to_another_user_is_refused_before_consent(app, people):
    launch = launch_for(app, patient="patient-1", username="dr")
    assert_refused_up_front(after_login(people, launch, "alice", "correct horse"))
    other = launch_for(app, patient="patient-9", username="someone-else")
    assert_refused_up_front(after_login(AuthActions(app.test_client()), other, "dr", "pw-dr"))


def test_practitioner_sees_the_launch_patient(app, people):
    allow(app, ["patient-9"], username="dr")  # a practitioner's launch stays within their list
    launch = launch_for(app, patient="patient-9")
    page = after_login(people, launch, "dr", "pw-dr")
    assert "patient-9" in context_line(page.get_data(as_text=True))


def test_patient_user_standalone_launch_shows_own_record(people):
    params, _ = people.authorize_params(scope="launch/patient patient/ImagingStudy.rs")
    page = people.client.get("/auth/authorize", query_string=params)
    page = people.login(page.get_data(as_text=True), "alice", "correct horse")
    html = page.get_data(as_text=True)
    assert "patient-1" in context_line(html)
    assert 'name="patient"' not in html  # no picker for a patient user


def test_consent_posted_for_a_launch_that_cannot_apply_is_refused(app, people):
    """The check also holds when the consent form is posted directly with another launch."""
    own = launch_for(app, patient="patient-1")
    page = after_login(people, own, "alice", "correct horse")
    foreign = launch_for(app, patient="patient-9")
    response = people.submit(page.get_data(as_text=True), "consent", {"launch": foreign},
                             button=("decision", "approve"))
    assert_refused_up_front(response)
