"""Unit tests for the FHIR API (fhir_facade.fhir) with the PACS faked by `responses`."""
import re

import pytest
import responses

from dicom_json_builders import ds
from facade_helpers import FAKE_PACS, PUBLIC, bearer, fake_app, token  # noqa: F401
from fhir_validation import validate

CT = "1.2.840.10008.5.1.4.1.1.2"


def study(uid, patient="P1", date="20210115", accession=None):
    return ds(StudyInstanceUID=uid, PatientID=patient, PatientName="Doe^Jane", StudyDate=date,
              AccessionNumber=accession, PatientSex="F")


def fake_pacs(rsps, studies, series_modalities=("CT",)):
    """Answer QIDO-RS like a PACS holding *studies*, each with one instance per series modality."""
    def studies_query(request):
        from urllib.parse import parse_qsl, urlsplit
        params = dict(parse_qsl(urlsplit(request.url).query))
        rows = studies
        for key in ("PatientID", "StudyInstanceUID", "AccessionNumber"):
            if key in params:
                tag = {"PatientID": "00100020", "StudyInstanceUID": "0020000D", "AccessionNumber": "00080050"}[key]
                rows = [s for s in rows if s.get(tag, {}).get("Value", [None])[0] == params[key]]
        import json
        return 200, {"Content-Type": "application/dicom+json"}, json.dumps(rows)

    rsps.add_callback(responses.GET, f"{FAKE_PACS}/studies", callback=studies_query)
    for s in studies:
        uid = s["0020000D"]["Value"][0]
        rsps.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/series",
                 json=[ds(SeriesInstanceUID=f"{uid}.{n}", Modality=m, SeriesNumber=str(n))
                       for n, m in enumerate(series_modalities, 1)])
        rsps.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/instances",
                 json=[ds(SeriesInstanceUID=f"{uid}.{n}", SOPInstanceUID=f"{uid}.{n}.1", SOPClassUID=CT)
                       for n, _ in enumerate(series_modalities, 1)])


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_search_by_patient_returns_a_valid_searchset(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.2", date="20200101"), study("1.2.9", patient="P2")])
    client = fake_app.test_client()
    response = client.get("/fhir/ImagingStudy?patient=P1&_include=ImagingStudy:endpoint",
                          headers=bearer(token(fake_app)))
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    bundle = response.get_json()
    validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["resource"]["id"] for e in matches] == ["1.2.1", "1.2.2"]
    assert matches[0]["fullUrl"] == f"{PUBLIC}/fhir/ImagingStudy/1.2.1"
    endpoint = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert endpoint[0]["address"] == f"{PUBLIC}/dicomweb"
    assert "pacs.internal" not in response.get_data(as_text=True)


def test_patient_token_without_patient_parameter_sees_only_its_patient(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.9", patient="P2")])
    bundle = fake_app.test_client().get("/fhir/ImagingStudy", headers=bearer(token(fake_app))).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["1.2.1"]


def test_other_patient_is_forbidden(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.9", patient="P2")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    response = client.get("/fhir/ImagingStudy?patient=P2", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/ImagingStudy/1.2.9", headers=headers).status_code == 403
    assert client.get("/fhir/Patient/P2", headers=headers).status_code == 403


def test_system_scope_sees_every_patient(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.9", patient="P2")])
    value = token(fake_app, scope="system/ImagingStudy.rs", patient=None)
    bundle = fake_app.test_client().get("/fhir/ImagingStudy", headers=bearer(value)).get_json()
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["1.2.1", "1.2.9"]


@pytest.mark.parametrize("headers, error", [
    ({}, None),
    ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ({"Authorization": "Basic abc"}, "invalid_request"),
])
def test_missing_or_bad_token_is_401(fake_app, headers, error):
    response = fake_app.test_client().get("/fhir/ImagingStudy?patient=P1", headers=headers)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_expired_and_tampered_tokens_are_401(fake_app):
    client = fake_app.test_client()
    expired = token(fake_app, lifetime=-10)
    assert client.get("/fhir/ImagingStudy", headers=bearer(expired)).status_code == 401
    good = token(fake_app)
    header, payload, signature = good.split(".")
    tampered = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature])
    assert client.get("/fhir/ImagingStudy", headers=bearer(tampered)).status_code == 401


def test_scope_without_imagingstudy_is_403(fake_app):
    value = token(fake_app, scope="patient/Observation.rs")
    assert fake_app.test_client().get("/fhir/ImagingStudy", headers=bearer(value)).status_code == 403


def test_read_study_and_patient(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1", accession="A1")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    resource = client.get("/fhir/ImagingStudy/1.2.1", headers=headers).get_json()
    validate(resource)
    assert resource["identifier"][1]["value"] == "A1"
    assert resource["subject"]["reference"] == "Patient/P1"
    patient = client.get("/fhir/Patient/P1", headers=headers).get_json()
    validate(patient)
    assert (patient["id"], patient["gender"], patient["name"][0]["family"]) == ("P1", "female", "Doe")


def test_unknown_resources_are_404_operation_outcomes(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app, scope="system/*.rs", patient=None))
    for path in ("/fhir/ImagingStudy/9.9.9", "/fhir/ImagingStudy/not-a-uid", "/fhir/Patient/nobody",
                 "/fhir/Endpoint/other", "/fhir/Observation/1"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.get_json()["issue"][0]["code"] == "not-found", path


def test_bad_search_values_are_400(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    for query in ("started=2021-13-45", "_count=abc", "_id=x/y"):
        response = client.get(f"/fhir/ImagingStudy?{query}", headers=headers)
        assert response.status_code == 400, query
        assert response.get_json()["resourceType"] == "OperationOutcome"


def test_pacs_down_is_503_with_retry_after(fake_app):
    import requests
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, re.compile(f"{FAKE_PACS}/studies.*"), body=requests.ConnectionError("refused"))
        response = fake_app.test_client().get("/fhir/ImagingStudy", headers=bearer(token(fake_app)))
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_metadata_and_format_negotiation(fake_app):
    client = fake_app.test_client()
    statement = client.get("/fhir/metadata").get_json()
    validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    uris = {e["url"]: e["valueUri"] for e in statement["rest"][0]["security"]["extension"][0]["extension"]}
    assert uris == {"authorize": f"{PUBLIC}/auth/authorize", "token": f"{PUBLIC}/auth/token"}
    assert client.get("/fhir/metadata", headers={"Accept": "text/html"}).status_code == 406
    assert client.get("/fhir/metadata?_format=html").status_code == 406
    assert client.get("/fhir/metadata", headers={"Accept": "application/json"}).status_code == 200


def test_endpoint_read_and_search(fake_app):
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    endpoint = client.get("/fhir/Endpoint/dicomweb", headers=headers).get_json()
    validate(endpoint)
    assert endpoint["address"] == f"{PUBLIC}/dicomweb"
    bundle = client.get("/fhir/Endpoint?connection-type=dicom-wado-rs", headers=headers).get_json()
    assert bundle["total"] == 1
    assert client.get("/fhir/Endpoint?status=off", headers=headers).get_json()["total"] == 0
