"""Issue 2's whole flow on a real Orthanc: CLI -> PKCE authorize -> login -> consent -> token ->
ImagingStudy search -> Endpoint -> WADO-RS retrieval whose parts equal the stored files."""
from __future__ import annotations

import hashlib

import pytest
import requests

from facade_helpers import bearer, make_app
from fhir_validation import validate
from multipart_parsers import parse_by_boundary, parse_by_length
from smart_flow import AuthActions

PUBLIC = "http://127.0.0.1:8080"
REDIRECT = "http://127.0.0.1:9999/callback"
SCOPE = "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Patient.rs patient/Endpoint.rs"


@pytest.fixture(scope="module")
def flow(orthanc, tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("e2e"), FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC)
    from smart.admin.cli import add_client, add_user
    with app.app_context():
        add_client("e2e-app", [REDIRECT], public=True)
        add_user("demo-patient", "s3cret-pass", patient="DEMO-0001")
    client = app.test_client()
    auth = AuthActions(client)
    code = auth.authorize("demo-patient", "s3cret-pass", client_id="e2e-app", redirect_uri=REDIRECT, scope=SCOPE)
    tokens = auth.exchange(code, code.verifier, client_id="e2e-app", redirect_uri=REDIRECT)
    return {"app": app, "client": client, "tokens": tokens, "orthanc": orthanc}


def test_token_response_carries_the_patient(flow):
    tokens = flow["tokens"]
    assert tokens["patient"] == "DEMO-0001"
    assert tokens["token_type"].lower() == "bearer"
    assert set(tokens["scope"].split()) <= set(SCOPE.split())
    assert "patient/ImagingStudy.rs" in tokens["scope"].split()


def test_search_read_endpoint_and_retrieve(flow):
    client, orthanc = flow["client"], flow["orthanc"]
    headers = bearer(flow["tokens"]["access_token"])
    expected = sorted({row["0020000D"]["Value"][0] for row in requests.get(
        f"{orthanc.dicomweb_url}/studies", params={"PatientID": "DEMO-0001"}, timeout=10).json()})
    bundle = client.get("/fhir/ImagingStudy?patient=DEMO-0001&_include=ImagingStudy:endpoint", headers=headers)
    assert bundle.status_code == 200
    bundle = bundle.get_json()
    validate(bundle)
    studies = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert sorted(s["id"] for s in studies) == expected == [orthanc.samples["demo"]["StudyInstanceUID"]]
    study = studies[0]
    assert {m["code"] for m in study["modality"]} == {"CT", "PT"}
    assert study["numberOfInstances"] == len(orthanc.samples["demo"]["SOPInstanceUIDs"])

    endpoint = client.get(f"/fhir/{study['endpoint'][0]['reference']}", headers=headers).get_json()
    validate(endpoint)
    assert endpoint["address"] == f"{PUBLIC}/dicomweb"
    patient = client.get("/fhir/Patient/DEMO-0001", headers=headers).get_json()
    validate(patient)
    assert patient["id"] == "DEMO-0001"

    path = endpoint["address"][len(PUBLIC):] + f"/studies/{study['id']}"
    response = client.get(path, headers={**headers, "Accept":
                                         'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200
    for parse in (parse_by_boundary, parse_by_length):
        parts = parse(response.data, response.headers["Content-Type"])
        got = sorted(hashlib.sha256(body).hexdigest() for _, body in parts)
        stored = sorted(orthanc.samples["sha256"][uid] for uid in orthanc.samples["demo"]["SOPInstanceUIDs"])
        assert got == stored


def test_same_token_on_another_patient(flow):
    client, orthanc = flow["client"], flow["orthanc"]
    headers = bearer(flow["tokens"]["access_token"])
    other = next(i for i in orthanc.samples["instances"].values() if i["PatientID"] == "1CT1")
    uid = next(u for u, i in orthanc.samples["instances"].items() if i is other)
    study, series = other["StudyInstanceUID"], other["SeriesInstanceUID"]
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=headers).status_code == 403
    assert client.get("/fhir/ImagingStudy?patient=1CT1", headers=headers).status_code == 403
    assert client.get("/fhir/Patient/1CT1", headers=headers).status_code == 403
    paths = [f"studies/{study}", f"studies/{study}/metadata", f"studies/{study}/series",
             f"studies/{study}/series/{series}", f"studies/{study}/series/{series}/metadata",
             f"studies/{study}/series/{series}/instances", f"studies/{study}/series/{series}/instances/{uid}",
             f"studies/{study}/series/{series}/instances/{uid}/metadata",
             f"studies/{study}/series/{series}/instances/{uid}/frames/1",
             f"studies/{study}/series/{series}/instances/{uid}/rendered"]
    token = flow["tokens"]["access_token"]
    head, payload, signature = token.split(".")
    tampered = ".".join([head, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    for path in paths:
        assert client.get(f"/dicomweb/{path}", headers=headers).status_code == 403, path
        assert client.get(f"/dicomweb/{path}").status_code == 401, path
        assert client.get(f"/dicomweb/{path}", headers=bearer(tampered)).status_code == 401, path
    assert client.get("/fhir/ImagingStudy?patient=DEMO-0001").status_code == 401
    assert client.get("/fhir/ImagingStudy?patient=DEMO-0001", headers=bearer(tampered)).status_code == 401


def test_cli_commands(flow):
    runner = flow["app"].test_cli_runner()
    result = runner.invoke(args=["smart", "add-client", "--client-id", "cli-app", "--redirect-uri",
                                 "http://127.0.0.1:9998/cb", "--public"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["smart", "add-client", "--client-id", "cli-app", "--redirect-uri",
                                "http://127.0.0.1:9998/cb", "--public"])
    assert again.exit_code != 0 and "Traceback" not in again.output
    result = runner.invoke(args=["smart", "add-user", "--username", "cli-user", "--password", "pw-123456",
                                 "--patient", "1CT1"])
    assert result.exit_code == 0, result.output
    assert "pw-123456" not in result.output
