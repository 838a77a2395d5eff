"""Per-client and per-user access lists (issue 12 item 2, SMART Imaging Access "Access rules"):
a ``system/`` token reaches only its backend client's stored patients, a practitioner's
``user/`` token only the user's; none until ``flask smart grant-access``."""
from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from sqlalchemy import inspect, text

from dicom_json_builders import ds
from facade_helpers import FAKE_PACS, bearer, make_app

#: StudyInstanceUID -> PatientID (= FHIR Patient id) of the fake PACS.
STUDIES = {"1.2.1": "P", "1.2.2": "Q"}
WHOLE_STUDY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
BOUNDARY = "BOUNDARY42"


def _studies_query(request):
    """QIDO-RS ``/studies`` matching PatientID and StudyInstanceUID exactly."""
    params = dict(parse_qsl(urlsplit(request.url).query))
    rows = [ds(StudyInstanceUID=uid, PatientID=pid, PatientName="Doe^Jane", StudyDate="20210115")
            for uid, pid in STUDIES.items()
            if params.get("PatientID", pid) == pid and params.get("StudyInstanceUID", uid) == uid]
    return 200, {"Content-Type": "application/dicom+json"}, json.dumps(rows)


def _part(uid: str) -> bytes:
    body = b"DICM" + uid.encode()
    return (b"--%s\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n%s\r\n--%s--\r\n"
            % (BOUNDARY.encode(), len(body), body, BOUNDARY.encode()))


@pytest.fixture
def pacs():
    """A PACS holding study 1.2.1 of patient P and 1.2.2 of patient Q."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, f"{FAKE_PACS}/studies", callback=_studies_query)
        for uid in STUDIES:
            series = [ds(SeriesInstanceUID=f"{uid}.1", Modality="CT", SeriesNumber="1")]
            instances = [ds(SeriesInstanceUID=f"{uid}.1", SOPInstanceUID=f"{uid}.1.1",
                            SOPClassUID="1.2.840.10008.5.1.4.1.1.2")]
            mock.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/series", json=series)
            mock.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/instances", json=instances)
            mock.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/metadata", json=instances)
            mock.add(responses.GET, f"{FAKE_PACS}/studies/{uid}", body=_part(uid),
                     content_type=f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        yield mock


@pytest.fixture
def app(tmp_path, database_url):
    """The facade on the fake PACS with a backend client, a practitioner and a patient user."""
    from smart.admin.cli import add_client, add_user

    application = make_app(tmp_path, FACADE_DATABASE_URL=database_url)
    with application.app_context():
        add_client("backend", [], public=False, jwks={"keys": []}, scope="system/ImagingStudy.rs")
        add_user("dr", "pw-dr", role="practitioner")
        add_user("alice", "pw-alice", patient="P")
    return application


def _token(app, who: str) -> str:
    """A ``system/`` token of the backend client or a ``user/`` token of the practitioner."""
    from smart.tokens.jwt import issue_access_token

    with app.app_context():
        if who == "client":
            value, _ = issue_access_token("backend", "backend", "system/ImagingStudy.rs system/Patient.rs",
                                          lifetime=300)
        else:
            value, _ = issue_access_token("viewer", "dr", "user/ImagingStudy.rs user/Patient.rs")
    return value


def _subject(who: str) -> list[str]:
    return ["--client-id", "backend"] if who == "client" else ["--username", "dr"]


def _cli(app, *args: str):
    return app.test_cli_runner().invoke(args=["smart", *args])


def _study_ids(client, headers, query: str = "") -> list[str]:
    response = client.get(f"/fhir/ImagingStudy{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted(e["resource"]["id"] for e in response.get_json().get("entry", []))


def _qido_uids(client, headers, query: str = "") -> list[str]:
    response = client.get(f"/dicomweb/studies{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted(row["0020000D"]["Value"][0] for row in response.get_json())


def _wado(client, headers, uid: str) -> int:
    return client.get(f"/dicomweb/studies/{uid}", headers={**headers, "Accept": WHOLE_STUDY}).status_code


def _sees(client, headers) -> dict:
    """Everything the before/after assertions look at, in one dict."""
    return {
        "search P": client.get("/fhir/ImagingStudy?patient=P", headers=headers).status_code,
        "search Q": client.get("/fhir/ImagingStudy?patient=Q", headers=headers).status_code,
        "read P": client.get("/fhir/ImagingStudy/1.2.1", headers=headers).status_code,
        "read Q": client.get("/fhir/ImagingStudy/1.2.2", headers=headers).status_code,
        "wado P": _wado(client, headers, "1.2.1"),
        "wado Q": _wado(client, headers, "1.2.2"),
        "Patient P": client.get("/fhir/Patient/P", headers=headers).status_code,
        "Patient Q": client.get("/fhir/Patient/Q", headers=headers).status_code,
        "search": _study_ids(client, headers),
        "qido": _qido_uids(client, headers),
        "Patient search": sorted(e["resource"]["id"] for e in
                                 client.get("/fhir/Patient", headers=headers).get_json().get("entry", [])),
    }


NOTHING = {"search P": 403, "search Q": 403, "read P": 403, "read Q": 403, "wado P": 403, "wado Q": 403,
           "Patient P": 403, "Patient Q": 403, "search": [], "qido": [], "Patient search": []}
ONLY_P = {"search P": 200, "search Q": 403, "read P": 200, "read Q": 403, "wado P": 200, "wado Q": 403,
          "Patient P": 200, "Patient Q": 403, "search": ["1.2.1"], "qido": ["1.2.1"], "Patient search": ["P"]}
BOTH = {"search P": 200, "search Q": 200, "read P": 200, "read Q": 200, "wado P": 200, "wado Q": 200,
        "Patient P": 200, "Patient Q": 200, "search": ["1.2.1", "1.2.2"], "qido": ["1.2.1", "1.2.2"],
        "Patient search": ["P", "Q"]}


@pytest.mark.parametrize("who", ["client", "user"])
def test_grant_and_revoke_decide_what_a_token_sees(app, pacs, who):
    client, headers = app.test_client(), bearer(_token(app, who))
    assert _sees(client, headers) == NOTHING  # default: no access
    assert _cli(app, "grant-access", *_subject(who), "--patient", "P").exit_code == 0
    assert _sees(client, headers) == ONLY_P
    assert client.get("/fhir/ImagingStudy?patient=P", headers=headers).get_json()["total"] == 1
    assert _wado_body(client, headers, "1.2.1") == b"DICM1.2.1"
    assert _cli(app, "grant-access", *_subject(who), "--all-patients").exit_code == 0
    assert _sees(client, headers) == BOTH
    assert _cli(app, "revoke-access", *_subject(who)).exit_code == 0
    assert _sees(client, headers) == NOTHING


def _wado_body(client, headers, uid: str) -> bytes:
    from multipart_parsers import parse_by_length

    response = client.get(f"/dicomweb/studies/{uid}", headers={**headers, "Accept": WHOLE_STUDY})
    [(_, data)] = parse_by_length(response.data, response.headers["Content-Type"])
    return data


@pytest.mark.parametrize("who", ["client", "user"])
def test_named_patients_are_searched_one_by_one_and_paged_together(app, pacs, who):
    client, headers = app.test_client(), bearer(_token(app, who))
    assert _cli(app, "grant-access", *_subject(who), "--patient", "P", "--patient", "Q").exit_code == 0
    assert _sees(client, headers) == BOTH
    assert _qido_uids(client, headers, "?limit=1") == ["1.2.1"]
    assert _qido_uids(client, headers, "?offset=1") == ["1.2.2"]
    assert _qido_uids(client, headers, "?PatientID=Q") == ["1.2.2"]
    assert _qido_uids(client, headers, "?PatientID=Z") == []
    # Both patients' studies, one page: same date, so the higher UID comes first.
    page = client.get("/fhir/ImagingStudy?_count=1", headers=headers).get_json()
    assert (page["total"], [e["resource"]["id"] for e in page["entry"]]) == (2, ["1.2.2"])
    # Taking one patient back leaves the other.
    assert _cli(app, "revoke-access", *_subject(who), "--patient", "Q").exit_code == 0
    assert _sees(client, headers) == ONLY_P


def test_qido_of_an_unlisted_patient_is_empty_not_refused(app, pacs):
    client, headers = app.test_client(), bearer(_token(app, "client"))
    _cli(app, "grant-access", "--client-id", "backend", "--patient", "P")
    assert _qido_uids(client, headers, "?PatientID=Q") == []
    assert _qido_uids(client, headers, "?PatientID=P") == ["1.2.1"]


def test_the_client_list_is_not_the_users_and_patient_tokens_are_unchanged(app, pacs):
    from facade_helpers import token

    _cli(app, "grant-access", "--client-id", "backend", "--all-patients")
    client = app.test_client()
    assert _sees(client, bearer(_token(app, "client"))) == BOTH
    assert _sees(client, bearer(_token(app, "user"))) == NOTHING
    # A patient token reaches its own patient with or without any list.
    patient = bearer(token(app, scope="patient/ImagingStudy.rs patient/Patient.rs", patient="P"))
    assert _sees(client, patient) == ONLY_P


def test_a_patient_users_user_scope_stays_their_own_record(app, pacs):
    from smart.tokens.jwt import issue_access_token

    with app.app_context():
        value, _ = issue_access_token("viewer", "alice", "user/ImagingStudy.rs user/Patient.rs",
                                      fhir_user="Patient/P")
    assert _sees(app.test_client(), bearer(value)) == ONLY_P


def test_practitioner_through_the_ehr_launch(app, pacs):
    """The must-show for a practitioner: a real EHR launch, consent and token exchange. The
    launch names no patient: one naming a patient outside the practitioner's list is refused
    before any token (the next test)."""
    from smart.admin.cli import add_client, create_launch
    from smart_flow import AuthActions

    auth = AuthActions(app.test_client())
    with app.app_context():
        add_client("ehr-app", ["https://app.example/cb"], public=True)
        launch = create_launch(username="dr")
    tokens = auth.obtain_token("dr", "pw-dr", scope="launch user/ImagingStudy.rs", launch=launch,
                               client_id="ehr-app", redirect_uri="https://app.example/cb")
    assert tokens["scope"] == "launch user/ImagingStudy.rs"
    headers, client = bearer(tokens["access_token"]), app.test_client()
    assert client.get("/fhir/ImagingStudy?patient=P", headers=headers).status_code == 403
    assert _wado(client, headers, "1.2.1") == 403
    _cli(app, "grant-access", "--username", "dr", "--patient", "P")
    assert _study_ids(client, headers, "?patient=P") == ["1.2.1"]
    assert client.get("/fhir/ImagingStudy?patient=Q", headers=headers).status_code == 403
    assert (_wado(client, headers, "1.2.1"), _wado(client, headers, "1.2.2")) == (200, 403)
    _cli(app, "grant-access", "--username", "dr", "--all-patients")
    assert _study_ids(client, headers, "?patient=Q") == ["1.2.2"]
    assert (_wado(client, headers, "1.2.1"), _wado(client, headers, "1.2.2")) == (200, 200)


# --- the CLI ------------------------------------------------------------------------------

def test_cli_prints_the_list_it_stored(app):
    assert _cli(app, "grant-access", "--client-id", "backend", "--patient", "Q", "--patient", "P").output == \
        "backend may see: P, Q.\n"
    assert _cli(app, "grant-access", "--client-id", "backend", "--patient", "P").output == \
        "backend may see: P, Q.\n"
    assert _cli(app, "revoke-access", "--client-id", "backend", "--patient", "P").output == "backend may see: Q.\n"
    assert _cli(app, "grant-access", "--username", "dr", "--all-patients").output == "dr may see: all patients.\n"
    assert _cli(app, "revoke-access", "--username", "dr").output == "dr may see: no patients.\n"
    assert _cli(app, "revoke-access", "--client-id", "backend").output == "backend may see: no patients.\n"


def test_plain_functions_behind_the_cli(app):
    from smart.admin.cli import access_list, grant_access, revoke_access

    with app.app_context():
        assert access_list(client_id="backend") == frozenset()
        assert grant_access(client_id="backend", patients=["P"]) == frozenset({"P"})
        assert grant_access(client_id="backend", all_patients=True) is None
        assert access_list(client_id="backend") is None
        assert access_list(username="dr") == frozenset()
        assert revoke_access(client_id="backend") == frozenset()


@pytest.mark.parametrize("args, message", [
    (["grant-access", "--client-id", "nobody", "--patient", "P"], "Error: no client 'nobody'\n"),
    (["grant-access", "--username", "nobody", "--all-patients"], "Error: no user 'nobody'\n"),
    (["revoke-access", "--client-id", "nobody"], "Error: no client 'nobody'\n"),
    (["grant-access", "--patient", "P"], "Error: give either --client-id or --username\n"),
    (["grant-access", "--client-id", "backend", "--username", "dr", "--patient", "P"],
     "Error: give either --client-id or --username\n"),
    (["grant-access", "--client-id", "backend"], "Error: give either --patient (one or more) or --all-patients\n"),
    (["grant-access", "--client-id", "backend", "--patient", "P", "--all-patients"],
     "Error: give either --patient (one or more) or --all-patients\n"),
    (["grant-access", "--client-id", "backend", "--patient", "not/an id"],
     "Error: patient id 'not/an id' is not a valid FHIR id\n"),
    (["grant-access", "--username", "alice", "--patient", "Q"],
     "Error: user 'alice' is a patient user: their tokens reach their own record only\n"),
])
def test_cli_errors_are_clear_and_store_nothing(app, args, message):
    from smart.admin.cli import access_list

    result = _cli(app, *args)
    assert (result.exit_code, result.output) == (1, message)
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    with app.app_context():
        assert access_list(client_id="backend") == frozenset()
        assert access_list(username="dr") == frozenset()


def test_revoking_named_patients_of_an_all_patients_grant_is_refused(app):
    _cli(app, "grant-access", "--client-id", "backend", "--all-patients")
    result = _cli(app, "revoke-access", "--client-id", "backend", "--patient", "P")
    assert result.exit_code == 1
    assert result.output == ("Error: 'backend' has access to all patients: revoke everything (no --patient), "
                             "then grant the patients it keeps\n")
    assert _cli(app, "revoke-access", "--client-id", "backend").output == "backend may see: no patients.\n"


def test_init_db_adds_the_access_table_to_an_existing_database(app):
    """A database of a release before the access lists and before migrations (no
    ``alembic_version``) gets the table from ``init-db``."""
    from smart.store.db import get_database

    engine = get_database(app).engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE smart_patient_access"))
        connection.execute(text("DROP TABLE alembic_version"))
    assert "smart_patient_access" not in inspect(engine).get_table_names()
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "smart_patient_access" in inspect(engine).get_table_names()
    assert _cli(app, "grant-access", "--client-id", "backend", "--patient", "P").output == "backend may see: P.\n"


def test_a_grant_made_elsewhere_is_seen_within_the_revocation_cache_time(tmp_path, database_url, pacs):
    """Another process's grant (a row written behind this app's cache) is read at the next request
    when ``SMART_REVOCATION_CACHE_SECONDS`` is 0."""
    from smart.admin.cli import add_client
    from smart.store.db import get_database
    from smart.tokens.jwt import issue_access_token

    app = make_app(tmp_path, SMART_REVOCATION_CACHE_SECONDS=0, FACADE_DATABASE_URL=database_url)
    with app.app_context():
        add_client("backend", [], public=False, jwks={"keys": []})
        value, _ = issue_access_token("backend", "backend", "system/ImagingStudy.rs")
    client, headers = app.test_client(), bearer(value)
    assert client.get("/fhir/ImagingStudy?patient=P", headers=headers).status_code == 403
    with get_database(app).engine.begin() as connection:
        connection.execute(text("INSERT INTO smart_patient_access (kind, subject, patient, granted_at) "
                                "VALUES ('client', 'backend', 'P', 0)"))
    assert client.get("/fhir/ImagingStudy?patient=P", headers=headers).status_code == 200


@pytest.mark.parametrize("launch_user", ["dr", None])
def test_an_ehr_launch_gives_a_practitioner_no_patient_beyond_their_list(app, pacs, launch_user):
    """A review found that a launch for Q (made by an EHR allowed Q) gave practitioner dr, allowed
    P only, a patient/ token for Q: the launch is refused with access_denied at the redirect
    URI, and the same launch for P still works."""
    from urllib.parse import parse_qs, urlsplit

    from smart.admin.cli import add_client, create_launch
    from smart_flow import AuthActions

    auth = AuthActions(app.test_client())
    with app.app_context():
        add_client("ehr-app", ["https://app.example/cb"], public=True)
        launch_q = create_launch(patient="Q", username=launch_user)
        launch_p = create_launch(patient="P", username=launch_user)
    _cli(app, "grant-access", "--username", "dr", "--patient", "P")
    scope = "launch patient/ImagingStudy.rs patient/Patient.rs"
    params, _ = auth.authorize_params(scope=scope, launch=launch_q, client_id="ehr-app",
                                      redirect_uri="https://app.example/cb", state="s")
    page = auth.client.get("/auth/authorize", query_string=params)
    refused = auth.login(page.get_data(as_text=True), "dr", "pw-dr")
    assert refused.status_code == 302
    location = urlsplit(refused.headers["Location"])
    assert location.netloc == "app.example"
    assert parse_qs(location.query)["error"] == ["access_denied"] and "code" not in parse_qs(location.query)
    tokens = auth.obtain_token("dr", "pw-dr", scope=scope, launch=launch_p, client_id="ehr-app",
                               redirect_uri="https://app.example/cb")
    assert tokens["patient"] == "P"
    headers = bearer(tokens["access_token"])
    assert _study_ids(app.test_client(), headers, "?patient=P") == ["1.2.1"]
