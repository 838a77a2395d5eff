"""Which patients an end user's token reaches: system/ never through the authorization code
grant, user/ of a patient user only their own record (SMART App Launch 2.2 §Scopes)."""
from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from dicom_json_builders import ds

PACS = "http://pacs.test/dicom-web"
#: StudyInstanceUID -> PatientID of the fake PACS.
STUDIES = {"1.2.1": "patient-1", "1.2.2": "patient-2", "1.2.3": "patient-3"}


@pytest.fixture
def pacs():
    """QIDO-RS of a PACS holding one study for each of three patients."""
    rows = [ds(StudyInstanceUID=uid, PatientID=pid, PatientName="Doe^Jane", StudyDate="20210115")
            for uid, pid in STUDIES.items()]

    def studies_query(request):
        params = dict(parse_qsl(urlsplit(request.url).query))
        tags = {"PatientID": "00100020", "StudyInstanceUID": "0020000D"}
        found = [r for r in rows
                 if all(r[tag]["Value"][0] == params[key] for key, tag in tags.items() if key in params)]
        return 200, {"Content-Type": "application/dicom+json"}, json.dumps(found)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, f"{PACS}/studies", callback=studies_query)
        for uid in STUDIES:
            mock.add(responses.GET, f"{PACS}/studies/{uid}/series",
                     json=[ds(SeriesInstanceUID=f"{uid}.1", Modality="CT", SeriesNumber="1")])
            instances = [ds(SeriesInstanceUID=f"{uid}.1", SOPInstanceUID=f"{uid}.1.1",
                            SOPClassUID="1.2.840.10008.5.1.4.1.1.2")]
            mock.add(responses.GET, f"{PACS}/studies/{uid}/instances", json=instances)
            mock.add(responses.GET, f"{PACS}/studies/{uid}/metadata", json=instances)
        yield mock


@pytest.fixture
def users(auth):
    auth.register_public_client()
    auth.register_user("alice", "correct horse", patient="patient-1")
    auth.register_user("dr", "pw-dr", patient=None, role="practitioner")
    auth.register_user("dr-new", "pw-dr-new", patient=None, role="practitioner")
    from smart.admin.cli import grant_access
    with auth.app.app_context():
        grant_access(username="dr", all_patients=True)
    return auth


def readable_patients(client, access_token) -> set[str]:
    """Patients whose ImagingStudy the token can read, by search and by read of every study."""
    headers = {"Authorization": "Bearer " + access_token}
    found = set()
    search = client.get("/fhir/ImagingStudy", headers=headers)
    if search.status_code == 200:
        found |= {STUDIES[e["resource"]["id"]] for e in search.get_json().get("entry", [])}
    else:
        assert search.status_code == 403, search.get_data(as_text=True)
    for uid, patient in STUDIES.items():
        read = client.get(f"/fhir/ImagingStudy/{uid}", headers=headers)
        assert read.status_code in (200, 403), read.get_data(as_text=True)
        if read.status_code == 200:
            found.add(patient)
        by_patient = client.get(f"/fhir/ImagingStudy?patient={patient}", headers=headers)
        if by_patient.status_code == 200 and by_patient.get_json().get("total"):
            found.add(patient)
    return found


ALL = {"patient-1", "patient-2", "patient-3"}


@pytest.mark.parametrize("username, password, scope, granted, patients", [
    # A patient user: system/ is never granted by the authorization code grant ...
    ("alice", "correct horse", "launch/patient system/ImagingStudy.rs", "launch/patient", set()),
    ("alice", "correct horse", "launch/patient openid fhirUser system/*.rs",
     "launch/patient openid fhirUser", set()),
    # ... user/ reaches only the user's own record, with or without the fhirUser scope ...
    ("alice", "correct horse", "launch/patient user/ImagingStudy.rs",
     "launch/patient user/ImagingStudy.rs", {"patient-1"}),
    ("alice", "correct horse", "user/ImagingStudy.rs", "user/ImagingStudy.rs", {"patient-1"}),
    ("alice", "correct horse", "launch/patient openid fhirUser user/ImagingStudy.rs",
     "launch/patient openid fhirUser user/ImagingStudy.rs", {"patient-1"}),
    # ... and patient/ the launch patient, who is the user.
    ("alice", "correct horse", "launch/patient patient/ImagingStudy.rs",
     "launch/patient patient/ImagingStudy.rs", {"patient-1"}),
    # A practitioner keeps user/ (every patient once granted --all-patients) but never gets system/ either.
    ("dr", "pw-dr", "user/ImagingStudy.rs", "user/ImagingStudy.rs", ALL),
    # A practitioner without a stored access list sees no patient (SMART Imaging Access).
    ("dr-new", "pw-dr-new", "user/ImagingStudy.rs", "user/ImagingStudy.rs", set()),
    ("dr", "pw-dr", "user/ImagingStudy.rs system/ImagingStudy.rs", "user/ImagingStudy.rs", ALL),
    ("dr", "pw-dr", "system/ImagingStudy.rs", "", set()),
])
def test_end_user_scope_matrix(app, client, users, pacs, username, password, scope, granted, patients):
    from smart.authz import AccessGrant
    from smart.tokens.jwt import decode_access_token

    token = users.obtain_token(username, password, scope=scope)
    assert token["scope"] == granted
    with app.app_context():
        claims = decode_access_token(token["access_token"])
    assert claims["scope"] == granted
    assert "system/" not in claims["scope"]
    if username == "alice":
        # The access token always names the user, so user/ is bounded by authz.
        assert claims["fhirUser"] == "Patient/patient-1"
        if "user/" in granted:
            grant = AccessGrant(claims=claims, scope=claims["scope"], patient=claims.get("patient"),
                                client_id=claims["client_id"])
            assert grant.patients("ImagingStudy") == frozenset({"patient-1"})
    assert readable_patients(client, token["access_token"]) == patients


def test_consent_page_does_not_offer_system_scopes(users):
    params, _ = users.authorize_params(scope="launch/patient system/ImagingStudy.rs patient/ImagingStudy.rs")
    page = users.client.get("/auth/authorize", query_string=params)
    page = users.login(page.get_data(as_text=True), "alice", "correct horse")
    html = page.get_data(as_text=True)
    # The listed scopes (the request's own scope string is carried in a hidden field).
    assert "<code>patient/ImagingStudy.rs</code>" in html
    assert "<code>system/ImagingStudy.rs</code>" not in html


def test_refresh_never_yields_system_scopes(app, users):
    """A refresh token stored before this rule (scope with system/) still refreshes without it."""
    from sqlalchemy import update

    from smart.store.db import get_session
    from smart.store.models import RefreshToken
    from smart.tokens.jwt import decode_access_token

    first = users.obtain_token(scope="launch/patient patient/ImagingStudy.rs offline_access")
    with app.app_context():
        session = get_session()
        session.execute(update(RefreshToken).values(
            scope="launch/patient patient/ImagingStudy.rs system/ImagingStudy.rs offline_access"))
        session.commit()
    second = users.refresh_response(first["refresh_token"]).get_json()
    assert "system/" not in second["scope"]
    with app.app_context():
        assert "system/" not in decode_access_token(second["access_token"])["scope"]


def test_for_end_user_drops_system_and_unbounded_user_scopes():
    from smart.scopes import for_end_user

    assert for_end_user("system/ImagingStudy.rs launch/patient user/Patient.rs", "practitioner") == "launch/patient user/Patient.rs"
    assert for_end_user("user/*.rs patient/*.rs", "patient", "Patient/p1") == "user/*.rs patient/*.rs"
    # A patient user whose token could not name their Patient gets no user/ scope at all.
    assert for_end_user("user/*.rs patient/*.rs", "patient", None) == "patient/*.rs"
    assert for_end_user("user/*.rs patient/*.rs", "patient", "RelatedPerson/r1") == "patient/*.rs"
    assert for_end_user("user/*.rs", "practitioner", None) == "user/*.rs"
