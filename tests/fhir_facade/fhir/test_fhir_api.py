"""Unit tests for the FHIR API (fhir_facade.fhir.api) with the PACS faked by `responses`."""
import re

import pytest
import responses

from dicom_json_builders import ds
from access_helpers import allow
from facade_helpers import FAKE_PACS, PUBLIC, bearer, make_app, token
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
        instances = [ds(SeriesInstanceUID=f"{uid}.{n}", SOPInstanceUID=f"{uid}.{n}.1", SOPClassUID=CT)
                     for n, _ in enumerate(series_modalities, 1)]
        rsps.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/instances", json=instances)
        rsps.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/metadata", json=instances)


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
    # Each study's web viewer (IHE MADO), referenced by the study and included beside it.
    assert [e["id"] for e in endpoint[1:]] == ["viewer-1.2.1", "viewer-1.2.2"]
    assert endpoint[1]["address"] == f"{PUBLIC}/viewer/viewer?StudyInstanceUIDs=1.2.1"
    assert endpoint[1]["payloadMimeType"] == ["text/html"] and endpoint[1]["connectionType"]["code"] == "web-viewer"
    assert matches[0]["resource"]["endpoint"] == [{"reference": "Endpoint/dicomweb"},
                                                  {"reference": "Endpoint/viewer-1.2.1"}]
    assert "pacs.internal" not in response.get_data(as_text=True)


def test_viewer_endpoint_read_is_a_read_of_its_study(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.9", patient="P2")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    response = client.get("/fhir/Endpoint/viewer-1.2.1", headers=headers)
    assert response.status_code == 200
    endpoint = response.get_json()
    validate(endpoint)
    assert endpoint["address"] == f"{PUBLIC}/viewer/viewer?StudyInstanceUIDs=1.2.1"
    # Another patient's study: refused as its ImagingStudy read is; an unknown one is not there.
    assert client.get("/fhir/Endpoint/viewer-1.2.9", headers=headers).status_code == 403
    assert client.get("/fhir/Endpoint/viewer-1.2.7", headers=headers).status_code == 404
    assert client.get("/fhir/Endpoint/viewer-x!", headers=headers).status_code == 404
    assert client.get("/fhir/Endpoint/viewer-1.2.1").status_code == 401


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
    allow(fake_app)  # system/ reaches only the client's access list
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


@pytest.mark.parametrize("summary", ["", "?_summary=true"])
def test_one_imagingstudy_read_sends_one_study_query(fake_app, rsps, summary):
    """Issue 12: the owner look-up and the resource share one study-level QIDO-RS query."""
    fake_pacs(rsps, [study("1.2.1", accession="A1")])
    client = fake_app.test_client()
    for _ in range(2):  # and again: nothing cached turns the second read into two queries
        before = len(rsps.calls)
        response = client.get(f"/fhir/ImagingStudy/1.2.1{summary}", headers=bearer(token(fake_app)))
        assert response.status_code == 200 and response.get_json()["id"] == "1.2.1"
        study_queries = [c for c in rsps.calls[before:] if c.request.url.split("?")[0] == f"{FAKE_PACS}/studies"]
        assert len(study_queries) == 1


def test_unknown_resources_are_404_operation_outcomes(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1")])
    client = fake_app.test_client()
    allow(fake_app)  # system/ reaches only the client's access list
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


def test_a_pacs_slower_than_the_bound_is_503_with_retry_after_on_fhir(fake_app):
    import requests
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, re.compile(f"{FAKE_PACS}/studies.*"), body=requests.ReadTimeout("slow"))
        response = fake_app.test_client().get("/fhir/ImagingStudy?patient=P1", headers=bearer(token(fake_app)))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["issue"][0]["code"] == "timeout"


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


# --- formats -----------------------------------------------------------------------------

@pytest.mark.parametrize("query, accept, status, mimetype", [
    ("", None, 200, "application/fhir+json"),
    ("", "application/fhir+xml", 200, "application/fhir+xml"),
    ("", "application/xml", 200, "application/fhir+xml"),
    ("", "application/fhir+json; fhirVersion=4.0", 200, "application/fhir+json"),
    ("", "application/fhir+xml;q=0.9, application/fhir+json;q=0.8", 200, "application/fhir+xml"),
    ("", "text/html, */*;q=0.1", 200, "application/fhir+json"),
    ("?_format=xml", "application/fhir+json", 200, "application/fhir+xml"),
    ("?_format=application/fhir%2Bxml", None, 200, "application/fhir+xml"),
    ("?_format=json", "application/fhir+xml", 200, "application/fhir+json"),
    ("", "text/html", 406, "application/fhir+json"),
    ("", "application/fhir+json; fhirVersion=3.0", 406, "application/fhir+json"),
    ("?_format=turtle", None, 406, "application/fhir+json"),
])
def test_format_negotiation(fake_app, query, accept, status, mimetype):
    headers = {"Accept": accept} if accept else {}
    response = fake_app.test_client().get(f"/fhir/metadata{query}", headers=headers)
    assert (response.status_code, response.mimetype) == (status, mimetype)
    if status == 406:
        assert response.get_json()["issue"][0]["code"] == "not-supported"


def test_xml_and_pretty_bodies(fake_app, rsps):
    from lxml import etree
    fake_pacs(rsps, [study("1.2.1", accession="A1")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    xml = client.get("/fhir/ImagingStudy?patient=P1&_format=xml&_pretty=true", headers=headers)
    root = etree.fromstring(xml.data)
    ns = {"f": "http://hl7.org/fhir"}
    assert root.tag == "{http://hl7.org/fhir}Bundle"
    assert root.find("f:total", ns).get("value") == "1"
    assert root.find(".//f:ImagingStudy/f:id", ns).get("value") == "1.2.1"
    assert b"\n  <" in xml.data
    compact = client.get("/fhir/ImagingStudy/1.2.1", headers=headers).get_data(as_text=True)
    pretty = client.get("/fhir/ImagingStudy/1.2.1?_pretty=true", headers=headers).get_data(as_text=True)
    assert "\n" not in compact and '\n  "resourceType": "ImagingStudy"' in pretty
    error = client.get("/fhir/ImagingStudy/9.9.9", headers={**headers, "Accept": "application/fhir+xml"})
    assert error.status_code == 404 and error.mimetype == "application/fhir+xml"
    assert b"OperationOutcome" in error.data


# --- paging, _summary, _elements --------------------------------------------------------------

def test_paging_links_page_stably_through_all_matches(fake_app, rsps):
    from urllib.parse import parse_qsl, urlsplit
    fake_pacs(rsps, [study(f"1.2.{n}", date=f"202101{n:02d}") for n in range(1, 8)])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    url, seen, pages = "/fhir/ImagingStudy?patient=P1&unknown=x&_count=3", [], 0
    while url:
        bundle = client.get(url, headers=headers).get_json()
        validate(bundle)
        assert bundle["total"] == 7
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "unknown" not in links["self"]
        assert dict(parse_qsl(urlsplit(links["last"]).query))["_offset"] == "6"
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        pages += 1
        url = links.get("next", "").replace(PUBLIC, "") or None
    assert pages == 3
    assert seen == [f"1.2.{n}" for n in range(7, 0, -1)]  # newest first, each once
    back = client.get("/fhir/ImagingStudy?patient=P1&_count=3&_offset=3", headers=headers).get_json()
    previous = {link["relation"]: link["url"] for link in back["link"]}["previous"]
    assert "_offset=0" in previous


def test_summary_count_and_count_zero(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.2")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    for query in ("_summary=count", "_count=0"):
        bundle = client.get(f"/fhir/ImagingStudy?patient=P1&{query}", headers=headers).get_json()
        validate(bundle)
        assert bundle["total"] == 2 and "entry" not in bundle
    queried = [c.request.url for c in rsps.calls]
    assert not any("/series" in u or "/instances" in u or "/metadata" in u for u in queried)


def test_summary_true_skips_instances(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1")])
    bundle = fake_app.test_client().get("/fhir/ImagingStudy?patient=P1&_summary=true",
                                        headers=bearer(token(fake_app))).get_json()
    validate(bundle)
    resource = bundle["entry"][0]["resource"]
    assert resource["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert resource["series"][0]["uid"] == "1.2.1.1" and "instance" not in resource["series"][0]
    assert not any("/instances" in c.request.url or "/metadata" in c.request.url for c in rsps.calls)


def test_elements_keeps_mandatory_elements(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1", accession="A1")])
    bundle = fake_app.test_client().get("/fhir/ImagingStudy?patient=P1&_elements=identifier",
                                        headers=bearer(token(fake_app))).get_json()
    validate(bundle)
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "identifier", "status", "subject"}
    assert not any("/instances" in c.request.url or "/metadata" in c.request.url for c in rsps.calls)


# --- strict handling, POST _search, modifiers -------------------------------------------------

def test_unknown_parameters_ignored_or_strict(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    lenient = client.get("/fhir/ImagingStudy?patient=P1&foo=bar", headers=headers)
    assert lenient.status_code == 200 and lenient.get_json()["total"] == 1
    strict = client.get("/fhir/ImagingStudy?patient=P1&foo=bar", headers={**headers, "Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "foo" in strict.get_json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/ImagingStudy?modality:not=CT", headers=headers).status_code == 400


def test_post_search_equals_get(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1"), study("1.2.2", date="20200101")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    posted = client.post("/fhir/ImagingStudy/_search", data={"patient": "P1", "started": "ge2021"},
                         headers=headers).get_json()
    got = client.get("/fhir/ImagingStudy?patient=P1&started=ge2021", headers=headers).get_json()
    assert posted == got and posted["total"] == 1
    wrong = client.post("/fhir/ImagingStudy/_search", json={"patient": "P1"}, headers=headers)
    assert wrong.status_code == 415 and wrong.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("query, found", [
    ("series=1.2.1.1", True), ("series=1.2.1.9", False), ("instance=1.2.1.1.1", True),
    (f"dicom-class=urn:oid:{CT}", True), ("dicom-class=urn:oid:1.2.3", False),
    ("status=available", True), ("status=cancelled", False),
    ("endpoint=Endpoint/dicomweb", True), ("endpoint=Endpoint/other", False),
    ("bodysite=http://snomed.info/sct|816094009", False),
])
def test_study_token_parameters(fake_app, rsps, query, found):
    fake_pacs(rsps, [study("1.2.1")])
    bundle = fake_app.test_client().get(f"/fhir/ImagingStudy?patient=P1&{query}",
                                        headers=bearer(token(fake_app))).get_json()
    assert bundle["total"] == (1 if found else 0), query


# --- Patient and Endpoint search ----------------------------------------------------------------

def patient_study(uid, patient, name, birth="19700102", sex="F"):
    return ds(StudyInstanceUID=uid, PatientID=patient, PatientName=name, PatientBirthDate=birth, PatientSex=sex,
              StudyDate="20210101")


@pytest.mark.parametrize("query, expected", [
    ("", ["P1", "P2", "dcm-P.203"]),
    ("_id=P2", ["P2"]),
    ("identifier=P1", ["P1"]),
    ("identifier=http://other|P1", []),
    ("name=mül", ["P1"]),
    ("name=JER", ["P2"]),
    ("family=Mueller", []),
    ("family:exact=Müller", ["P1"]),
    ("given:contains=rôm", ["P2"]),
    ("birthdate=1970-01-02", ["P1"]),
    ("birthdate=lt1980", ["P1", "dcm-P.203"]),
    ("gender=male", ["P2"]),
    ("gender=female,other", ["P1", "dcm-P.203"]),
])
def test_patient_search(fake_app, rsps, query, expected):
    fake_pacs(rsps, [patient_study("1.2.1", "P1", "Müller^Anna"), patient_study("1.2.2", "P2", "Buc^Jérôme",
                                                                                  birth="19900101", sex="M"),
                     patient_study("1.2.3", "P 3", "Doe^John", birth="19600101", sex="O")])
    allow(fake_app)  # system/ reaches only the client's access list
    value = token(fake_app, scope="system/Patient.rs", patient=None)
    bundle = fake_app.test_client().get(f"/fhir/Patient?{query}", headers=bearer(value)).get_json()
    validate(bundle)
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == expected, query


def test_patient_search_is_confined_to_the_token_patient(fake_app, rsps):
    fake_pacs(rsps, [patient_study("1.2.1", "P1", "A^B"), patient_study("1.2.2", "P2", "C^D")])
    client = fake_app.test_client()
    headers = bearer(token(fake_app))
    bundle = client.get("/fhir/Patient", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["P1"]
    assert client.get("/fhir/Patient?_id=P2", headers=headers).status_code == 403
    assert client.get("/fhir/Patient?gender=robot", headers=headers).status_code == 400


@pytest.mark.parametrize("query, total", [
    ("_id=dicomweb", 1), ("_id=other", 0), ("connection-type=dicom-wado-rs", 1),
    ("connection-type=http://terminology.hl7.org/CodeSystem/endpoint-connection-type|dicom-wado-rs", 1),
    ("connection-type=hl7-fhir-rest", 0), ("status=active", 1), ("status=off", 0), ("status=active,off", 1),
])
def test_endpoint_search(fake_app, query, total):
    bundle = fake_app.test_client().get(f"/fhir/Endpoint?{query}", headers=bearer(token(fake_app))).get_json()
    validate(bundle)
    assert bundle["total"] == total


# --- the CapabilityStatement lists exactly what works -------------------------------------------

SAMPLE_VALUES = {"reference": "P1", "token": "x", "date": "ge2020", "string": "a"}
TOKEN_SAMPLES = {"_id": "1.2.1", "identifier": "A1", "series": "1.2.1.1", "instance": "1.2.1.1.1",
                 "dicom-class": f"urn:oid:{CT}", "status": "available", "gender": "female",
                 "connection-type": "dicom-wado-rs", "endpoint": "Endpoint/dicomweb"}


def test_capability_statement_lists_exactly_what_works(fake_app, rsps):
    fake_pacs(rsps, [study("1.2.1", accession="A1")])
    client = fake_app.test_client()
    allow(fake_app)  # system/ reaches only the client's access list
    headers = {**bearer(token(fake_app, scope="system/*.rs", patient=None)), "Prefer": "handling=strict"}
    statement = client.get("/fhir/metadata").get_json()
    rest = statement["rest"][0]
    assert statement["format"] == ["json", "xml", "application/fhir+json", "application/fhir+xml"]
    listed = {r["type"]: r for r in rest["resource"]}
    assert set(listed) == {"ImagingStudy", "Endpoint", "Patient", "AuditEvent"}
    for resource_type, entry in listed.items():
        interactions = {"search-type"} if resource_type == "AuditEvent" else {"read", "search-type"}
        assert {i["code"] for i in entry["interaction"]} == interactions
        for param in entry["searchParam"]:
            value = TOKEN_SAMPLES.get(param["name"]) or SAMPLE_VALUES[param["type"]]
            if resource_type == "Endpoint":
                value = {"_id": "dicomweb", "status": "active"}.get(param["name"], value)
            for method in ("GET", "POST"):
                if method == "GET":
                    response = client.get(f"/fhir/{resource_type}?{param['name']}={value}", headers=headers)
                else:
                    response = client.post(f"/fhir/{resource_type}/_search", data={param["name"]: value},
                                           headers=headers)
                assert response.status_code == 200, (resource_type, param["name"], response.get_json())
        for include in entry.get("searchInclude", []):
            response = client.get(f"/fhir/{resource_type}?_include={include}", headers=headers)
            assert response.status_code == 200, include
        unlisted = client.get(f"/fhir/{resource_type}?_has=x", headers=headers)
        assert unlisted.status_code == 400
    assert client.get("/fhir/Observation", headers=headers).status_code == 404


def test_a_study_uid_answered_twice_is_one_resource_and_needs_every_owner(fake_app, rsps):
    # Orthanc files one StudyInstanceUID under two patients and answers it twice.
    fake_pacs(rsps, [study("1.2.5"), study("1.2.5", patient="P2")])
    client = fake_app.test_client()
    allow(fake_app)  # system/ reaches only the client's access list
    system = bearer(token(fake_app, scope="system/ImagingStudy.rs", patient=None))
    bundle = client.get("/fhir/ImagingStudy?_id=1.2.5", headers=system).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["1.2.5"] and bundle["total"] == 1
    assert client.get("/fhir/ImagingStudy/1.2.5", headers=system).status_code == 200
    # P1's token may not read a study that is also P2's
    assert client.get("/fhir/ImagingStudy/1.2.5", headers=bearer(token(fake_app))).status_code == 403


def test_one_series_query_serves_all_of_a_patients_studies(fake_app, rsps):
    import json as _json
    studies = [study(f"1.2.{n}") for n in range(1, 4)]
    for s in studies:
        s["00201206"] = {"vr": "IS", "Value": [1]}
    fake_pacs(rsps, studies, series_modalities=("MR",))
    rows = [ds(SeriesInstanceUID=f"1.2.{n}.1", Modality="CT", SeriesNumber="1", PatientID="P1") for n in range(1, 4)]
    for n, row in enumerate(rows, 1):
        row["0020000D"] = {"vr": "UI", "Value": [f"1.2.{n}"]}
    rsps.add(responses.GET, f"{FAKE_PACS}/series", body=_json.dumps(rows), content_type="application/dicom+json")
    bundle = fake_app.test_client().get("/fhir/ImagingStudy?patient=P1", headers=bearer(token(fake_app))).get_json()
    # the batch answer (CT) was used, not the per-study one (MR)
    assert [e["resource"]["series"][0]["modality"]["code"] for e in bundle["entry"]] == ["CT", "CT", "CT"]
    assert not any(c.request.url.split("?")[0].endswith("/series") and "/studies/" in c.request.url
                   for c in rsps.calls)


def test_a_patients_series_query_runs_alongside_the_study_query_when_cold(fake_app, rsps, tmp_path):
    import json as _json
    import threading
    studies = [study(f"1.2.{n}") for n in range(1, 4)]
    for s in studies:
        s["00201206"] = {"vr": "IS", "Value": [1]}
    rows = [ds(SeriesInstanceUID=f"1.2.{n}.1", Modality="CT", SeriesNumber="1", PatientID="P1",
               StudyInstanceUID=f"1.2.{n}") for n in range(1, 4)]
    series_asked = threading.Event()

    def series_query(request):
        series_asked.set()
        return 200, {"Content-Type": "application/dicom+json"}, _json.dumps(rows)

    def studies_query(request):
        # Answered only once the series query has been asked: it must not wait for this one.
        assert series_asked.wait(5), "the series query waited for the study query"
        return 200, {"Content-Type": "application/dicom+json"}, _json.dumps(studies)

    rsps.add_callback(responses.GET, f"{FAKE_PACS}/series", callback=series_query)
    rsps.add_callback(responses.GET, f"{FAKE_PACS}/studies", callback=studies_query)
    for s in studies:
        uid = s["0020000D"]["Value"][0]
        rsps.add(responses.GET, f"{FAKE_PACS}/studies/{uid}/metadata",
                 json=[ds(SeriesInstanceUID=f"{uid}.1", SOPInstanceUID=f"{uid}.1.1", SOPClassUID=CT)])
    client, headers = fake_app.test_client(), bearer(token(fake_app))
    bundle = client.get("/fhir/ImagingStudy?patient=P1", headers=headers).get_json()
    assert [e["resource"]["series"][0]["uid"] for e in bundle["entry"]] == ["1.2.3.1", "1.2.2.1", "1.2.1.1"]

    def series_calls():
        return [c for c in rsps.calls if "/series" in c.request.url]
    assert len(series_calls()) == 1 and "PatientID=P1" in series_calls()[0].request.url
    # Warm (the patient's series are cached) and count-only searches ask no series query.
    assert client.get("/fhir/ImagingStudy?patient=P1&_count=2", headers=headers).status_code == 200
    fresh = make_app(tmp_path / "fresh")
    assert fresh.test_client().get("/fhir/ImagingStudy?patient=P1&_summary=count",
                                   headers=bearer(token(fresh))).get_json()["total"] == 3
    assert len(series_calls()) == 1


# --- _lastUpdated (SMART Imaging Access: patient + _lastUpdated SHALL) ----------------------

@pytest.mark.parametrize("query, found", [
    ("_lastUpdated=ge2023-01-01", True),   # the series added in 2023 counts
    ("_lastUpdated=gt2023-03-01", False),
    ("_lastUpdated=2023-03", True),
    ("_lastUpdated=lt2022", False),
    ("_lastUpdated=lt2022,ge2023", True),
    ("started=ge2023-01-01", False),       # the study itself began in 2021
])
def test_last_updated_is_the_latest_study_or_series_date(fake_app, rsps, query, found):
    fake_pacs(rsps, [study("1.2.1", date="20210115")])
    rsps.replace(responses.GET, f"{FAKE_PACS}/studies/1.2.1/series", json=[
        ds(SeriesInstanceUID="1.2.1.1", Modality="CT", SeriesNumber="1", SeriesDate="20210115"),
        ds(SeriesInstanceUID="1.2.1.2", Modality="CT", SeriesNumber="2", SeriesDate="20230301", SeriesTime="0930")])
    bundle = fake_app.test_client().get(f"/fhir/ImagingStudy?patient=P1&{query}",
                                        headers=bearer(token(fake_app))).get_json()
    assert bundle["total"] == (1 if found else 0), query


def test_last_updated_of_a_resource():
    from fhir_facade.fhir.search import last_updated
    assert last_updated({"started": "2021-01-15", "series": [{"started": "2023-03-01T09:30:00+00:00"},
                                                             {"uid": "1"}]}, "UTC") == "2023-03-01T09:30:00+00:00"
    assert last_updated({"started": "2024-05-01T10:00:00-05:00", "series": [{"started": "2024-05-01"}]},
                        "UTC") == "2024-05-01"  # the whole day ends after 10:00-05:00
    assert last_updated({"series": []}, "UTC") is None
    assert "_lastUpdated" in {p["name"] for p in fake_capability()["rest"][0]["resource"][0]["searchParam"]}


def fake_capability():
    from fhir_facade.fhir.capability import capability_statement
    from fhir_facade.resources.mapping import MappingContext
    return capability_statement(MappingContext(public_url=PUBLIC))
