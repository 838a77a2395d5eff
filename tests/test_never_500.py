"""Malformed input never produces a 500 or a stack trace (DESIGN.md "Errors")."""
import re

import pytest
import responses

from access_helpers import allow
from facade_helpers import FAKE_PACS, bearer, token

NASTY = ["%00", "%FF%FE", "..%2F..%2Fetc%2Fpasswd", "a" * 5000, "%E2%80%AE", "1.2.3%0D%0AX-Injected:%201",
         "%22%3E%3Cscript%3E", "-1", "9999-12-31", "ge9999-12-31", "0001", "lt0001-01-01", "1e999", "[]", "{}", "%F0%9F%92%A9", "1,,2", "*", "?", "\\", "'"]

FHIR_PATHS = ["/fhir/ImagingStudy/{v}", "/fhir/Patient/{v}", "/fhir/Endpoint/{v}", "/fhir/ImagingStudy?patient={v}",
              "/fhir/ImagingStudy?started={v}", "/fhir/ImagingStudy?identifier={v}", "/fhir/ImagingStudy?_count={v}",
              "/fhir/ImagingStudy?modality={v}", "/fhir/ImagingStudy?_include={v}", "/fhir/ImagingStudy?_elements={v}",
              "/fhir/ImagingStudy?_summary={v}", "/fhir/Patient?name={v}", "/fhir/Patient?birthdate={v}",
              "/fhir/ImagingStudy?{v}={v}", "/fhir/{v}", "/fhir/metadata?_format={v}"]
DICOMWEB_PATHS = ["/dicomweb/studies/{v}", "/dicomweb/studies/1.2.3/series/{v}", "/dicomweb/studies/1.2.3/{v}",
                  "/dicomweb/studies/1.2.3/series/1.2/instances/1.3/frames/{v}", "/dicomweb/studies?{v}={v}",
                  "/dicomweb/studies?limit={v}", "/dicomweb/{v}",
                  "/dicomweb/studies/1.2.3/series/1.2/instances/1.3/bulk/{v}"]


@pytest.fixture
def quiet_pacs():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, re.compile(f"{re.escape(FAKE_PACS)}/.*"), json=[])
        yield mock


@pytest.mark.parametrize("template", FHIR_PATHS + DICOMWEB_PATHS)
def test_nasty_values_are_answered_in_the_protocols_shape(fake_app, quiet_pacs, template):
    client = fake_app.test_client()
    allow(fake_app)  # system/ reaches only the client's access list
    headers = bearer(token(fake_app, scope="system/*.rs", patient=None))
    for value in NASTY:
        for accept in (None, "application/fhir+json", "text/html", "multipart/related; type=\"x"):
            response = client.get(template.format(v=value), headers={**headers, **({"Accept": accept} if accept else {})})
            assert response.status_code < 500, (template, value, accept, response.status_code)
            body = response.get_data(as_text=True)
            assert "Traceback" not in body and "File \"" not in body
            if response.status_code >= 400 and template.startswith("/fhir") and response.is_json:
                assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "bearer x.y.z", "Basic Zm9vOmJhcg==",
                                    "Bearer " + "A" * 10000, "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                                    "Bearer \u00e9\u00e9"])
def test_malformed_authorization_headers_are_401(fake_app, header):
    client = fake_app.test_client()
    for path in ("/fhir/ImagingStudy", "/dicomweb/studies", "/dicomweb/studies/1.2.3"):
        response = client.get(path, headers={"Authorization": header.encode("utf-8").decode("latin-1")})
        assert response.status_code == 401, (path, header)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_methods_not_allowed_are_405_in_shape(fake_app):
    client = fake_app.test_client()
    response = client.delete("/fhir/ImagingStudy/1.2.3")
    assert response.status_code == 405 and response.get_json()["resourceType"] == "OperationOutcome"
    assert client.put("/dicomweb/studies/1.2.3").status_code == 405
