"""Share links (issue 15) against a real Orthanc: the patient's API, the recipient's page, and the
one access policy binding a share's token to its study, its patient, and the share's life."""
from __future__ import annotations

import logging
import re
import sqlite3

import pydicom
import pytest

import devpacs
import samples
from facade_helpers import bearer, make_app, token

PUBLIC = "https://facade.example/base"
PATIENT = "SHARE-PATIENT"
OTHER = "SHARE-OTHER"


@pytest.fixture(scope="module")
def sh(orthanc, tmp_path_factory):
    """Two studies of PATIENT, one of OTHER, one filed under both; an app on a file database."""
    uids = {name: pydicom.uid.generate_uid() for name in ("a", "b", "other", "mixed")}
    for name, patient in (("a", PATIENT), ("b", PATIENT), ("other", OTHER), ("mixed", PATIENT), ("mixed", OTHER)):
        ds = samples.make_instance(PatientID=patient, StudyInstanceUID=uids[name], Modality="OT")
        devpacs.store_file(orthanc.url, devpacs.to_part10(ds))
    folder = tmp_path_factory.mktemp("shares")
    app = make_app(folder, FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC,
                   SMART_REVOCATION_CACHE_SECONDS=0)
    return {"app": app, "db": folder / "facade.db", **uids,
            "patient": token(app, patient=PATIENT, fhir_user=f"Patient/{PATIENT}")}


def create(sh, body, tok=None):
    return sh["app"].test_client().post("/auth/shares", json=body, headers=bearer(tok or sh["patient"]))


def redeem(sh, url, pin=None, address="127.0.0.1", client=None):
    """Open the link (and post its PIN); return (response, the page's token or None)."""
    client = client or sh["app"].test_client()
    path = url[len(PUBLIC):]
    env = {"REMOTE_ADDR": address}
    page = client.get(path, environ_base=env)
    if pin is not None and page.status_code == 200 and b'name="pin"' in page.data:
        csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
        page = client.post(path, data={"pin": pin, "csrf_token": csrf}, environ_base=env)
    found = re.search(rb'var token = "([^"]+)"', page.data)
    return page, found.group(1).decode() if found else None


def dicomweb(sh, path, tok):
    return sh["app"].test_client().get(f"/dicomweb/{path}", headers={**bearer(tok), "Accept": "application/dicom+json"})


def test_a_share_reaches_its_study_only(sh):
    made = create(sh, {"study": sh["a"]})
    assert made.status_code == 201, made.get_data(as_text=True)
    body = made.get_json()
    assert body["url"].startswith(f"{PUBLIC}/share/")
    page, share_token = redeem(sh, body["url"])
    assert page.status_code == 200 and share_token
    assert dicomweb(sh, f"studies/{sh['a']}/series", share_token).status_code == 200
    # Study B of the same patient, a study of another patient, one filed under both: refused.
    for study in (sh["b"], sh["other"], sh["mixed"]):
        assert dicomweb(sh, f"studies/{study}/series", share_token).status_code == 403, study
    # Top-level QIDO: its one study, whatever was asked.
    listed = dicomweb(sh, "studies", share_token).get_json()
    assert [row["0020000D"]["Value"][0] for row in listed] == [sh["a"]]
    assert dicomweb(sh, f"studies?StudyInstanceUID={sh['b']}", share_token).get_json() == []
    assert dicomweb(sh, f"studies?PatientID={OTHER}", share_token).get_json() == []
    # FHIR: the study's read, no search, no other study.
    fhir = sh["app"].test_client()
    assert fhir.get(f"/fhir/ImagingStudy/{sh['a']}", headers=bearer(share_token)).status_code == 200
    assert fhir.get(f"/fhir/ImagingStudy/{sh['b']}", headers=bearer(share_token)).status_code == 403
    searched = fhir.get(f"/fhir/ImagingStudy?patient={PATIENT}", headers=bearer(share_token))
    assert searched.status_code == 403
    assert searched.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"/fhir/Patient/{PATIENT}", headers=bearer(share_token)).status_code == 403
    # A share's token cannot share further.
    assert create(sh, {"study": sh["a"]}, tok=share_token).status_code == 403


def test_revocation_is_effective_at_once(sh):
    body = create(sh, {"study": sh["a"], "expires_in": 600}).get_json()
    _, share_token = redeem(sh, body["url"])
    listed = sh["app"].test_client().get("/auth/shares", headers=bearer(sh["patient"])).get_json()["shares"]
    mine = [s for s in listed if s["id"] == body["id"]]
    assert mine and mine[0]["uses"] == 1 and mine[0]["study"] == sh["a"] and mine[0]["last_used_at"]
    assert "url" not in mine[0] and "secret_hash" not in mine[0]
    revoked = sh["app"].test_client().delete(f"/auth/shares/{body['id']}", headers=bearer(sh["patient"]))
    assert revoked.status_code == 204
    after = dicomweb(sh, f"studies/{sh['a']}/series", share_token)
    assert after.status_code == 401
    assert redeem(sh, body["url"])[0].status_code == 404
    assert sh["app"].test_client().delete(f"/auth/shares/{body['id']}",
                                          headers=bearer(sh["patient"])).status_code == 404
    other = token(sh["app"], patient=OTHER, fhir_user=f"Patient/{OTHER}")
    second = create(sh, {"study": sh["a"]}).get_json()
    assert sh["app"].test_client().delete(f"/auth/shares/{second['id']}", headers=bearer(other)).status_code == 404


def test_expiry_ends_the_page_and_the_tokens(sh):
    body = create(sh, {"study": sh["a"], "expires_in": 3600}).get_json()
    _, share_token = redeem(sh, body["url"])
    assert dicomweb(sh, f"studies/{sh['a']}/series", share_token).status_code == 200
    with sqlite3.connect(sh["db"]) as db:
        db.execute("UPDATE smart_share_link SET expires_at = 1 WHERE id = ?", (body["id"],))
    assert dicomweb(sh, f"studies/{sh['a']}/series", share_token).status_code == 401
    assert redeem(sh, body["url"])[0].status_code == 404


def test_wrong_pins_are_throttled_like_passwords(sh):
    from smart.web.login import MAX_PAIR_FAILURES
    body = create(sh, {"study": sh["a"], "pin": "4321"}).get_json()
    page, _ = redeem(sh, body["url"])
    assert page.status_code == 200 and b'name="pin"' in page.data  # no token before the PIN
    assert b"var token" not in page.data
    for _ in range(MAX_PAIR_FAILURES):
        page, found = redeem(sh, body["url"], pin="0000", address="10.0.0.9")
        assert page.status_code == 401 and found is None
    page, found = redeem(sh, body["url"], pin="4321", address="10.0.0.9")
    assert page.status_code == 401 and found is None  # throttled: the right PIN too
    page, found = redeem(sh, body["url"], pin="4321", address="10.0.0.10")
    assert page.status_code == 200 and found


def test_requests_that_cannot_be_shares(sh):
    from smart.tokens.shares import DEFAULT_SHARE_MAX_SECONDS
    for bad in ({}, {"study": "not a uid"}, {"study": sh["a"], "expires_in": 0},
                {"study": sh["a"], "expires_in": DEFAULT_SHARE_MAX_SECONDS + 1},
                {"study": sh["a"], "expires_in": "60"}, {"study": sh["a"], "pin": "12"}):
        answer = create(sh, bad)
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request", bad
    assert create(sh, {"study": sh["other"]}).status_code == 403
    assert create(sh, {"study": sh["mixed"]}).status_code == 403
    assert create(sh, {"study": "1.2.3.999999"}).status_code == 404
    practitioner = token(sh["app"], patient=PATIENT)  # patient context, but not the patient
    assert create(sh, {"study": sh["a"]}, tok=practitioner).status_code == 403
    assert sh["app"].test_client().post("/auth/shares", json={"study": sh["a"]}).status_code == 401


def test_no_share_secret_in_the_database_or_the_logs(sh, caplog):
    caplog.set_level(logging.DEBUG)
    body = create(sh, {"study": sh["a"], "pin": "98765"}).get_json()
    secret = body["url"].rsplit("/", 1)[1]
    _, share_token = redeem(sh, body["url"], pin="98765")
    dicomweb(sh, f"studies/{sh['a']}/series", share_token)
    assert len(secret) >= 43  # 32 random bytes
    with sqlite3.connect(sh["db"]) as db:
        rows = db.execute("SELECT * FROM smart_share_link").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows and secret not in repr(rows) and secret not in dump
    assert "98765" not in dump
    assert sh["db"].read_bytes().find(secret.encode()) == -1
    assert secret not in caplog.text and share_token not in caplog.text


def test_my_images_page_lists_shares_creates_and_revokes(sh):
    from smart.admin.cli import add_user
    with sh["app"].app_context():
        add_user("share-patient", "share-patient-pw", patient=PATIENT)
    browser = sh["app"].test_client()
    login = browser.get("/auth/images")
    assert b'name="password"' in login.data
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', login.data).group(1).decode()
    signed_in = browser.post("/auth/images", data={"action": "login", "username": "share-patient",
                                                   "password": "share-patient-pw", "csrf_token": csrf})
    assert signed_in.status_code == 303
    page = browser.get("/auth/images")
    assert page.status_code == 200
    assert sh["a"].encode() in page.data and sh["b"].encode() in page.data and sh["other"].encode() not in page.data
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    listed_before = set(re.findall(rb'data-share="([^"]+)"', page.data))
    made = browser.post("/auth/images", data={"action": "share", "study": sh["a"], "days": "2", "pin": "2468",
                                              "csrf_token": csrf})
    assert made.status_code == 201
    url = re.search(rb'id="share-link" href="([^"]+)"', made.data).group(1).decode()
    # the new share: the one listed now and not before (other tests' shares made in the same
    # second may be listed first)
    (share_id,) = {i.decode() for i in re.findall(rb'data-share="([^"]+)"', made.data)} - {
        i.decode() for i in listed_before}
    assert redeem(sh, url, pin="2468")[1]
    assert browser.post("/auth/images", data={"action": "share", "study": sh["other"], "days": "2",
                                              "csrf_token": csrf}).status_code == 403
    assert browser.post("/auth/images", data={"action": "revoke", "share_id": share_id,
                                              "csrf_token": "forged"}).status_code == 400
    revoked = browser.post("/auth/images", data={"action": "revoke", "share_id": share_id, "csrf_token": csrf})
    assert revoked.status_code == 200 and f'data-share="{share_id}"'.encode() not in revoked.data
    assert redeem(sh, url, pin="2468")[0].status_code == 404


def test_a_share_of_all_studies_reaches_the_patient_only(sh):
    body = create(sh, {"study": "all"}).get_json()
    _, share_token = redeem(sh, body["url"])
    for study, status in ((sh["a"], 200), (sh["b"], 200), (sh["other"], 403), (sh["mixed"], 403)):
        assert dicomweb(sh, f"studies/{study}/series", share_token).status_code == status, study
    listed = {row["0020000D"]["Value"][0] for row in dicomweb(sh, "studies", share_token).get_json()}
    assert {sh["a"], sh["b"]} <= listed and sh["other"] not in listed
    fhir = sh["app"].test_client()
    assert fhir.get(f"/fhir/ImagingStudy?patient={OTHER}", headers=bearer(share_token)).status_code == 403
    assert fhir.get(f"/fhir/ImagingStudy?patient={PATIENT}", headers=bearer(share_token)).status_code == 200


def test_share_events_are_in_the_audit_trail_without_the_secret(sh, orthanc):
    """Issue 16 × 15: a share created, a wrong PIN, a use and a revocation are AuditEvents (the
    study named, the refused use a minor failure), and no row holds the link's secret or PIN."""
    import json

    from smart.audit import get_recorder

    uid = pydicom.uid.generate_uid()  # a study no other test names, so the rows are this test's
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=uid, Modality="OT")
    devpacs.store_file(orthanc.url, devpacs.to_part10(ds))
    body = create(sh, {"study": uid, "pin": "8642"}).get_json()
    secret = body["url"].rsplit("/", 1)[1]
    assert redeem(sh, body["url"], pin="1111", address="10.0.0.77")[1] is None
    assert redeem(sh, body["url"], pin="8642", address="10.0.0.78")[1]
    assert sh["app"].test_client().delete(f"/auth/shares/{body['id']}",
                                          headers=bearer(sh["patient"])).status_code == 204
    assert get_recorder(sh["app"]).flush()
    with sqlite3.connect(sh["db"]) as db:
        rows = db.execute("SELECT subtype, action, outcome, resource FROM facade_audit_event "
                          "ORDER BY recorded, id").fetchall()
    mine = [(subtype, action, outcome) for subtype, action, outcome, resource in rows if uid in resource]
    assert mine == [("110135", "C", "0"), ("share-used", "E", "4"), ("share-used", "E", "0"),
                    ("110135", "D", "0")]
    dump = json.dumps(rows)
    assert secret not in dump and "8642" not in dump


def test_a_shares_token_gets_its_study_as_zip_and_no_other(sh):
    import io
    import zipfile
    _, share_token = redeem(sh, create(sh, {"study": sh["a"]}).get_json()["url"])
    client = sh["app"].test_client()
    zipped = {**bearer(share_token), "Accept": "application/zip"}
    answer = client.get(f"/dicomweb/studies/{sh['a']}", headers=zipped)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.data))
    [member] = archive.namelist()[:-1]
    assert pydicom.dcmread(io.BytesIO(archive.read(member))).StudyInstanceUID == sh["a"]
    for study in (sh["b"], sh["other"], sh["mixed"]):
        for path in (f"studies/{study}", f"studies/{study}?accept=application/zip"):
            refused = client.get(f"/dicomweb/{path}", headers=zipped)
            assert refused.status_code == 403, (path, refused.status_code)
            assert refused.headers["Content-Type"] != "application/zip"
