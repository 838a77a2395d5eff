"""The audit trail end to end: a scripted session against a real Orthanc, then what P's token reads
back from ``GET /fhir/AuditEvent`` (exact events and outcomes, 50 frames as one event), what it
may not read, R4B validity, and no token or password in the audit table or the log."""
from __future__ import annotations

import json
import logging

import pydicom
import pytest
from sqlalchemy import text

import devpacs
import samples
from facade_helpers import PUBLIC_URL, bearer, make_app
from fhir_validation import validate
from smart_flow import DEFAULT_CLIENT_ID, DEFAULT_SCOPE, AuthActions

P, Q = "AUDIT-P", "AUDIT-Q"
PASSWORD = "correct horse audit"
SCOPE = DEFAULT_SCOPE + " patient/AuditEvent.rs"


@pytest.fixture(scope="module")
def world(orthanc, tmp_path_factory):
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    multiframe = samples.make_instance(PatientID=P, StudyInstanceUID=study, SeriesInstanceUID=series,
                                       NumberOfFrames=10, Rows=8, Columns=8, Modality="OT", InstanceNumber=1)
    other = samples.make_instance(PatientID=Q, Modality="OT")
    for ds in (multiframe, other):
        devpacs.store_file(orthanc.url, devpacs.to_part10(ds))
    app = make_app(tmp_path_factory.mktemp("audit"), FACADE_PACS_URL=orthanc.dicomweb_url,
                   FACADE_PUBLIC_URL=PUBLIC_URL, FACADE_AUDIT_WINDOW=600)
    return {"app": app, "study": study, "series": series, "sop": str(multiframe.SOPInstanceUID),
            "other": str(other.StudyInstanceUID)}


def _events(client, token, query):
    response = client.get(f"/fhir/AuditEvent?{query}", headers=bearer(token))
    return response


def _summary(event):
    kind = event["subtype"][0]["code"]
    study = next((e for e in event.get("entity", []) if e.get("what", {}).get("reference", "").startswith(
        "ImagingStudy/")), None)
    count = study["detail"][0]["valueString"] if study and "detail" in study else None
    return kind, event["outcome"], count


def test_scripted_session_is_audited_exactly(world, caplog):
    caplog.set_level(logging.DEBUG)
    app, client = world["app"], world["app"].test_client()
    auth = AuthActions(client)
    auth.register_user("audit-p", PASSWORD, patient=P)
    auth.register_user("audit-q", PASSWORD, patient=Q)
    first = auth.obtain_token("audit-p", PASSWORD, scope=SCOPE)
    session_token = first["access_token"]

    assert client.get(f"/fhir/ImagingStudy?patient={P}", headers=bearer(session_token)).status_code == 200
    whole = client.get(f"/dicomweb/studies/{world['study']}", headers=bearer(session_token))
    assert whole.status_code == 200 and len(whole.data) > 10 * 64
    frames = f"/dicomweb/studies/{world['study']}/series/{world['series']}/instances/{world['sop']}/frames"
    for n in range(50):
        response = client.get(f"{frames}/{n % 10 + 1}", headers=bearer(session_token))
        assert response.status_code == 200
    assert client.get(f"/dicomweb/studies/{world['other']}", headers=bearer(session_token)).status_code == 403
    revoked = client.post("/auth/revoke", data={"token": session_token, "client_id": DEFAULT_CLIENT_ID})
    assert revoked.status_code == 200
    assert client.get(f"/fhir/ImagingStudy?patient={P}", headers=bearer(session_token)).status_code == 401

    reader = auth.obtain_token("audit-p", PASSWORD, scope=SCOPE)["access_token"]
    # The browser session is still P's: the second token needs no new login. Q logs in elsewhere.
    q_token = AuthActions(app.test_client()).obtain_token("audit-q", PASSWORD, scope=SCOPE)["access_token"]
    assert app.extensions["smart_audit"].flush()

    bundle = _events(client, reader, f"patient={P}&_count=100").get_json()
    validate(bundle)
    found = sorted(_summary(entry["resource"]) for entry in bundle["entry"])
    assert found == sorted([
        ("110122", "0", None),                                # P's login
        ("consent-given", "0", None),                         # remembered consent (then not asked again)
        ("token-issued", "0", None), ("token-issued", "0", None),
        ("search-type", "0", None),                           # ImagingStudy?patient=P
        ("wado-rs", "0", None),                               # the whole study
        ("wado-rs-frames", "0", "50"),                        # 50 frame requests, one event
        ("wado-rs", "4", None),                               # Q's study, refused
        ("token-revoked", "0", None),
    ]), found
    assert bundle["total"] == 9
    # The 401 after revocation names no one: it is not P's event (no token verified).
    by_kind = {(_summary(e["resource"])[0], e["resource"]["outcome"]): e["resource"] for e in bundle["entry"]}
    refused = by_kind[("wado-rs", "4")]
    assert {"display": "another patient"} in [e["what"] for e in refused["entity"] if "what" in e] or \
        f"Patient/{Q}" in json.dumps(refused)  # P asked for it: P's own trail may name it
    jtis = [e["what"]["identifier"]["value"] for e in by_kind[("wado-rs-frames", "0")]["entity"]
            if e.get("what", {}).get("identifier", {}).get("system") == "urn:ietf:params:oauth:jwt-claim:jti"]
    assert len(jtis) == 1 and jtis[0] not in session_token.split(".")[0]

    # Reading the trail is recorded too (DICOM 110101 Audit Log Used). Paging: two a page, a next link.
    assert app.extensions["smart_audit"].flush()
    used = _events(client, reader, "type=110101").get_json()
    assert used["total"] == 1 and used["entry"][0]["resource"]["entity"][-2]["role"]["code"] == "24"
    assert app.extensions["smart_audit"].flush()
    page = _events(client, reader, f"patient={P}&_count=2").get_json()
    assert page["total"] == 9 + 2 and len(page["entry"]) == 2
    assert any(link["relation"] == "next" for link in page["link"])
    # Searching by entity (the study) and type.
    by_study = _events(client, reader, f"entity=ImagingStudy/{world['study']}").get_json()
    assert sorted(_summary(e["resource"]) for e in by_study["entry"]) == [
        ("wado-rs", "0", None), ("wado-rs-frames", "0", "50")]
    assert _events(client, reader, "type=110114").get_json()["total"] == 4  # login, 2 tokens, revocation
    # P's token cannot read Q's events; Q's token reads Q's own, where P appears only as "another patient".
    assert _events(client, reader, f"patient={Q}").status_code == 403
    q_events = _events(client, q_token, f"patient={Q}").get_json()
    refused_for_q = [e["resource"] for e in q_events["entry"] if e["resource"]["outcome"] == "4"]
    assert len(refused_for_q) == 1 and f"Patient/{P}" not in json.dumps(refused_for_q)
    # A token without AuditEvent scope: 403.
    plain = auth.obtain_token("audit-p", PASSWORD, scope=DEFAULT_SCOPE)["access_token"]
    assert _events(client, plain, f"patient={P}").status_code == 403

    assert app.extensions["smart_audit"].flush()
    with app.app_context():
        engine = app.extensions["smart_db"].engine
        with engine.connect() as connection:
            dump = json.dumps([list(map(str, row)) for row in connection.execute(text(
                "SELECT * FROM facade_audit_event"))])
    for secret in (session_token, reader, q_token, plain, PASSWORD):
        assert secret not in dump
        assert secret not in caplog.text
    assert app.extensions["smart_audit"].dropped == 0
