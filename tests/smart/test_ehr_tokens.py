"""Tokens issued by an EHR (issue 17) against real components: oidc-provider plays the EHR's
authorization server (tests/ehr/ehr.mjs), Orthanc the PACS; an app gets its token with
authorization code + PKCE, as an app would, and reads studies and pixels through the facade."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pydicom
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

import devpacs
import samples
from ehr_provider import FACADE_SECRET, MRN_SYSTEM, Ehr
from facade_helpers import bearer, make_app
from multipart_parsers import parse_by_boundary

PUBLIC = "https://facade.example/base"
FHIR_BASE = PUBLIC + "/fhir"
#: The cache bounds of this module's facade (seconds): small, so the tests can outwait them.
TOKEN_BOUND = 3.0
INACTIVE_BOUND = 1.0
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ehr_world(orthanc, tmp_path_factory):
    """Two studies of MRN A, one of MRN B in Orthanc; the EHR knows alice (A) and bob (B); the
    facade trusts the EHR, introspecting with client_secret_basic."""
    run = uuid.uuid4().hex[:8].upper()
    mrn_a, mrn_b = f"EHR-A-{run}", f"EHR-B-{run}"
    stored: dict[str, dict[str, str]] = {}
    for mrn, count in ((mrn_a, 2), (mrn_b, 1)):
        for _ in range(count):
            study = pydicom.uid.generate_uid()
            for number in (1, 2):
                ds = samples.make_instance(PatientID=mrn, StudyInstanceUID=study, InstanceNumber=number,
                                           Modality="CT")
                data = devpacs.to_part10(ds)
                devpacs.store_file(orthanc.url, data)
                stored.setdefault(study, {})[str(ds.SOPInstanceUID)] = sha(data)
    studies_a = sorted(s for s in stored if s not in _studies_of(stored, mrn_b, orthanc))
    app = make_app(tmp_path_factory.mktemp("ehr"), FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC,
                   SMART_EHR_TOKEN_CACHE_SECONDS=TOKEN_BOUND, SMART_EHR_INACTIVE_CACHE_SECONDS=INACTIVE_BOUND,
                   SMART_EHR_TIMEOUT=3.0)
    ehr = Ehr(FHIR_BASE, {"alice": {"id": "ehr-alice", "mrn": mrn_a}, "bob": {"id": "ehr-bob", "mrn": mrn_b}}).start()
    from smart.admin.issuers import add_issuer
    with app.app_context():
        add_issuer(ehr.url, MRN_SYSTEM, fhir_base=ehr.url + "/fhir", introspection_client_id="facade",
                   introspection_secret=FACADE_SECRET)
    try:
        yield {"app": app, "client": app.test_client(), "ehr": ehr, "stored": stored, "studies_a": studies_a,
               "studies_b": sorted(set(stored) - set(studies_a)), "mrn_a": mrn_a}
    finally:
        ehr.stop()


def _studies_of(stored, mrn, orthanc):
    import requests
    answer = requests.get(f"{orthanc.dicomweb_url}/studies", params={"PatientID": mrn}, timeout=10).json()
    return {row["0020000D"]["Value"][0] for row in answer}


def _search(world, token, patient="ehr-alice"):
    return world["client"].get(f"/fhir/ImagingStudy?patient={patient}&_include=ImagingStudy:endpoint",
                               headers=bearer(token))


@pytest.mark.parametrize("client_id", ["imaging-app", "imaging-app-opaque"], ids=["jwt", "opaque"])
def test_an_ehr_token_finds_exactly_the_mapped_patients_studies(ehr_world, client_id):
    token = ehr_world["ehr"].token(client_id)
    assert (token.count(".") == 2) == (client_id == "imaging-app")
    response = _search(ehr_world, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    entries = response.get_json()["entry"]
    studies = [e["resource"] for e in entries if e["resource"]["resourceType"] == "ImagingStudy"]
    assert sorted(s["id"] for s in studies) == ehr_world["studies_a"]
    assert {s["subject"]["reference"] for s in studies} == {"Patient/ehr-alice"}
    # The WADO-RS Endpoint, and the web-viewer Endpoint (issue 14) of exactly the patient's studies.
    addresses = [e["resource"]["address"] for e in entries if e["resource"]["resourceType"] == "Endpoint"]
    assert addresses[0] == PUBLIC + "/dicomweb"
    assert sorted(addresses[1:]) == sorted(f"{PUBLIC}/viewer/viewer?StudyInstanceUIDs={uid}"
                                           for uid in ehr_world["studies_a"])


@pytest.mark.parametrize("client_id", ["imaging-app", "imaging-app-opaque"], ids=["jwt", "opaque"])
def test_wado_rs_of_the_patients_studies_streams_the_stored_bytes(ehr_world, client_id):
    token = ehr_world["ehr"].token(client_id)
    for study in ehr_world["studies_a"]:
        response = ehr_world["client"].get(f"/dicomweb/studies/{study}",
                                           headers={**bearer(token), "Accept": WADO_ACCEPT})
        assert response.status_code == 200
        parts = parse_by_boundary(response.data, response.headers["Content-Type"])
        assert sorted(sha(body) for _, body in parts) == sorted(ehr_world["stored"][study].values())


def test_another_patients_study_is_refused_on_fhir_and_dicomweb(ehr_world):
    token = ehr_world["ehr"].token("imaging-app")
    client = ehr_world["client"]
    [other] = ehr_world["studies_b"]
    assert client.get(f"/fhir/ImagingStudy/{other}", headers=bearer(token)).status_code == 403
    assert client.get(f"/dicomweb/studies/{other}", headers={**bearer(token), "Accept": WADO_ACCEPT}).status_code == 403
    assert client.get(f"/dicomweb/studies/{other}/metadata", headers=bearer(token)).status_code == 403
    # SMART Imaging Access: a patient value that is not the token's patient is 403, not an empty Bundle.
    assert _search(ehr_world, token, "ehr-bob").status_code == 403
    assert _search(ehr_world, token, ehr_world["mrn_a"]).status_code == 403  # the PACS's id is not the EHR's
    own = client.get(f"/fhir/ImagingStudy/{ehr_world['studies_a'][0]}", headers=bearer(token))
    assert own.status_code == 200 and own.get_json()["subject"]["reference"] == "Patient/ehr-alice"


def test_the_patient_is_named_by_the_ehrs_id_in_includes_and_reads(ehr_world):
    token = ehr_world["ehr"].token("imaging-app", scope="launch/patient patient/ImagingStudy.rs patient/Patient.rs")
    client = ehr_world["client"]
    bundle = client.get("/fhir/ImagingStudy?patient=ehr-alice&_include=ImagingStudy:patient",
                        headers=bearer(token)).get_json()
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert [p["id"] for p in patients] == ["ehr-alice"]
    assert {i["value"] for i in patients[0]["identifier"]} == {ehr_world["mrn_a"]}
    read = client.get("/fhir/Patient/ehr-alice", headers=bearer(token))
    assert read.status_code == 200 and read.get_json()["id"] == "ehr-alice"
    assert client.get(f"/fhir/Patient/{ehr_world['mrn_a']}", headers=bearer(token)).status_code == 403
    assert client.get("/fhir/Patient/ehr-bob", headers=bearer(token)).status_code == 403


def test_the_patient_search_speaks_the_ehrs_id(ehr_world):
    token = ehr_world["ehr"].token("imaging-app", scope="launch/patient patient/ImagingStudy.rs patient/Patient.rs")
    client = ehr_world["client"]
    for query in ("", "?_id=ehr-alice", "?_id=ehr-alice&gender=female,male,other,unknown"):
        answer = client.get(f"/fhir/Patient{query}", headers=bearer(token))
        assert answer.status_code == 200, (query, answer.get_json())
        entries = answer.get_json()["entry"]
        assert [e["resource"]["id"] for e in entries] == ["ehr-alice"], query
        assert entries[0]["fullUrl"].endswith("/Patient/ehr-alice")
        assert {i["value"] for i in entries[0]["resource"]["identifier"]} == {ehr_world["mrn_a"]}
    for other in ("ehr-bob", ehr_world["mrn_a"], f"ehr-alice,{ehr_world['mrn_a']}"):
        assert client.get(f"/fhir/Patient?_id={other}", headers=bearer(token)).status_code == 403, other


def test_a_token_revoked_at_the_ehr_is_refused_within_the_cache_bound(ehr_world):
    ehr = ehr_world["ehr"]
    token = ehr.token("imaging-app-opaque")
    assert _search(ehr_world, token).status_code == 200
    ehr.revoke(token)
    time.sleep(TOKEN_BOUND + 0.2)
    response = _search(ehr_world, token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def _forge(claims: dict, key=None, alg="RS256", kid="forged") -> str:
    key = key or RSAKey.generate_key(2048, private=True)
    return jwt.encode({"alg": alg, "kid": kid, "typ": "at+jwt"}, claims, key, algorithms=[alg])


def _claims(ehr, **changes):
    now = int(time.time())
    claims = {"iss": ehr.url, "sub": "alice", "aud": FHIR_BASE, "exp": now + 300, "iat": now,
              "client_id": "imaging-app", "scope": "patient/ImagingStudy.rs", "patient": "ehr-alice",
              "jti": uuid.uuid4().hex}
    claims.update(changes)
    return claims


def _hs256_with_public_key(ehr) -> str:
    """An HS256 token whose HMAC key is the EHR's public key (the algorithm-confusion attack)."""
    [public] = [RSAKey.import_key(k) for k in ehr.jwks()["keys"]]
    secret = public.as_pem(private=False)

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    signing_input = b64(json.dumps({"alg": "HS256", "kid": public.kid}).encode()) + b"." + b64(
        json.dumps(_claims(ehr)).encode())
    return (signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()


def _unsigned(claims: dict) -> str:
    def b64(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


@pytest.mark.parametrize("make", [
    pytest.param(lambda ehr: ehr.token("imaging-app", resource="https://other.example/fhir"), id="other-audience"),
    pytest.param(lambda ehr: _forge(_claims(ehr)), id="unknown-key"),
    pytest.param(_hs256_with_public_key, id="hs256-with-the-public-key"),
    pytest.param(lambda ehr: _forge(_claims(ehr, iss="http://127.0.0.1:9/untrusted")), id="untrusted-issuer"),
    pytest.param(lambda ehr: _unsigned(_claims(ehr)), id="alg-none"),
])
def test_tokens_the_facade_must_refuse_get_401(ehr_world, make):
    token = make(ehr_world["ehr"])
    for path in ("/fhir/ImagingStudy?patient=ehr-alice", f"/dicomweb/studies/{ehr_world['studies_a'][0]}/metadata"):
        response = ehr_world["client"].get(path, headers=bearer(token))
        assert response.status_code == 401, (path, response.get_data(as_text=True))
        assert "Bearer" in response.headers["WWW-Authenticate"]


def test_an_expired_ehr_token_gets_401(ehr_world):
    token = ehr_world["ehr"].token("imaging-app-short")  # lives 3 s
    assert _search(ehr_world, token).status_code == 200
    time.sleep(3.5)
    assert _search(ehr_world, token).status_code == 401


def test_the_ehr_down_and_back(ehr_world, monkeypatch):
    """Cached tokens work until their bound; new ones get 503 + Retry-After; when the EHR is back,
    new tokens work without a restart of the facade."""
    from smart.tokens import issuers
    # The restarted EHR signs with a new key; the unknown-key test above has just used up the
    # backoff between JWK Set refetches (a unit test checks the backoff itself).
    monkeypatch.setattr(issuers, "UNKNOWN_KID_BACKOFF", 0.0)
    ehr = ehr_world["ehr"]
    cached = ehr.token("imaging-app-opaque")
    fresh = ehr.token("imaging-app-opaque")
    unmapped = ehr.token("imaging-app", login="bob")  # bob's Patient has never been read
    assert _search(ehr_world, cached).status_code == 200
    ehr.stop()
    try:
        assert _search(ehr_world, cached).status_code == 200
        for token, patient in ((fresh, "ehr-alice"), (unmapped, "ehr-bob")):
            for response in (_search(ehr_world, token, patient),
                             ehr_world["client"].get(f"/dicomweb/studies/{ehr_world['studies_a'][0]}/metadata",
                                                     headers=bearer(token))):
                assert response.status_code == 503
                assert int(response.headers["Retry-After"]) > 0
        time.sleep(TOKEN_BOUND + 0.2)
        assert _search(ehr_world, cached).status_code == 503
    finally:
        ehr.start()  # same port; a new signing key (and the opaque tokens it held are gone)
    for client_id in ("imaging-app-opaque", "imaging-app"):
        assert _search(ehr_world, ehr.token(client_id)).status_code == 200
    assert _search(ehr_world, ehr.token("imaging-app", login="bob"), "ehr-bob").status_code == 200


def test_no_patient_search_of_an_ehr_token_reaches_another_patient(ehr_world):
    token = ehr_world["ehr"].token("imaging-app", scope="launch/patient patient/ImagingStudy.rs patient/Patient.rs")
    client = ehr_world["client"]
    form = {**bearer(token), "Content-Type": "application/x-www-form-urlencoded"}
    for body in ("_id=ehr-bob", "_id=ehr-alice,ehr-bob", "_id=ehr-alice&_id=ehr-bob", "_id="):
        assert client.post("/fhir/Patient/_search", data=body, headers=form).status_code == 403, body
    assert client.post("/fhir/Patient/_search?_id=ehr-alice", data="_id=ehr-bob", headers=form).status_code == 403
    answer = client.post("/fhir/Patient/_search", data="_id=ehr-alice", headers=form)
    assert [e["resource"]["id"] for e in answer.get_json()["entry"]] == ["ehr-alice"]
    for query in ("_id:not=ehr-bob", "_id:exact=ehr-bob"):
        assert client.get(f"/fhir/Patient?{query}", headers=bearer(token)).status_code == 400, query
    for query in (f"identifier=EHR-B-{ehr_world['mrn_a'][6:]}", "gender=male,female,other,unknown", "name=a",
                  "_count=1000"):
        found = client.get(f"/fhir/Patient?{query}", headers=bearer(token)).get_json()
        assert {e["resource"]["id"] for e in found.get("entry", [])} <= {"ehr-alice"}, query


def test_the_patient_search_bundle_links_speak_the_ehrs_id(ehr_world):
    token = ehr_world["ehr"].token("imaging-app", scope="launch/patient patient/ImagingStudy.rs patient/Patient.rs")
    client = ehr_world["client"]
    answer = client.get("/fhir/Patient?_id=ehr-alice", headers=bearer(token)).get_json()
    [self_link] = [link["url"] for link in answer["link"] if link["relation"] == "self"]
    assert "_id=ehr-alice" in self_link, self_link
    assert ehr_world["mrn_a"] not in self_link
    again = client.get(self_link[self_link.index("/fhir/"):], headers=bearer(token))
    assert again.status_code == 200
    assert [e["resource"]["id"] for e in again.get_json()["entry"]] == ["ehr-alice"]


def test_the_imaging_study_search_next_page_of_an_ehr_token_is_its_own(ehr_world):
    token = ehr_world["ehr"].token("imaging-app", scope="launch/patient patient/ImagingStudy.rs patient/Patient.rs")
    client = ehr_world["client"]
    for query in ("patient=ehr-alice&_count=1", "_count=1"):
        first = client.get(f"/fhir/ImagingStudy?{query}", headers=bearer(token)).get_json()
        links = {link["relation"]: link["url"] for link in first["link"]}
        assert ehr_world["mrn_a"] not in " ".join(links.values()), links
        second = client.get(links["next"][links["next"].index("/fhir/"):], headers=bearer(token))
        assert second.status_code == 200, second.get_json()
        uids = [e["resource"]["identifier"][0]["value"] for e in first["entry"] + second.get_json()["entry"]]
        assert sorted(uid.removeprefix("urn:oid:") for uid in uids) == ehr_world["studies_a"], query
