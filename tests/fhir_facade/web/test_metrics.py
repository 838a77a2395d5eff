"""Issue 13: /metrics parses as Prometheus text, counts what it should, and names no patient, UID or token.

Metrics are process-wide (prometheus-client's default registry), so each test reads them
before and after and asserts the difference.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests
import responses
from prometheus_client.parser import text_string_to_metric_families

import fake_pacs
from facade_helpers import FAKE_PACS, bearer, token
from fhir_facade.pacs.metrics import OPERATIONS

STUDY = "1.2.826.0.1.3680043.8.498.4242"
SERIES = "1.2.826.0.1.3680043.8.498.4243"
OTHER_PATIENT = "SOMEONE-ELSE-77"


def scrape(app) -> dict:
    """``{(sample name, sorted labels): value}`` of one /metrics answer, parsed by prometheus_client."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def pacs():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake_pacs.install(mock, FAKE_PACS)
        yield mock


def test_requests_are_counted_by_route_template_and_status_and_timed(fake_app, pacs):
    value_ = token(fake_app, scope="patient/*.rs", patient=fake_pacs.PATIENT_ID)
    client = fake_app.test_client()
    before = scrape(fake_app)
    assert client.get(f"/fhir/Patient/{fake_pacs.PATIENT_ID}", headers=bearer(value_)).status_code == 200
    assert client.get(f"/fhir/Patient/{OTHER_PATIENT}", headers=bearer(value_)).status_code == 403
    assert client.get(f"/fhir/ImagingStudy?patient={fake_pacs.PATIENT_ID}", headers=bearer(value_)).status_code == 200
    assert client.get(f"/nowhere/{STUDY}").status_code == 404
    assert client.open("/fhir/metadata", method="BREW").status_code == 405
    after = scrape(fake_app)
    requests_total = "facade_http_requests_total"
    assert delta(before, after, requests_total, method="GET", route="/fhir/Patient/<patient_id>", status="200") == 1
    assert delta(before, after, requests_total, method="GET", route="/fhir/Patient/<patient_id>", status="403") == 1
    assert delta(before, after, requests_total, method="GET", route="/fhir/ImagingStudy", status="200") == 1
    assert delta(before, after, requests_total, method="GET", route="<no route>", status="404") == 1
    assert delta(before, after, requests_total, method="other", route="<no route>", status="405") == 1
    seconds = "facade_http_request_duration_seconds"
    assert delta(before, after, seconds + "_count", method="GET", route="/fhir/Patient/<patient_id>") == 2
    assert delta(before, after, seconds + "_bucket", method="GET", route="/fhir/Patient/<patient_id>", le="+Inf") == 2
    assert delta(before, after, seconds + "_sum", method="GET", route="/fhir/Patient/<patient_id>") > 0


def test_pacs_requests_are_timed_by_operation_and_caches_counted(fake_app, pacs):
    value_ = token(fake_app, scope="patient/*.rs", patient=fake_pacs.PATIENT_ID)
    client = fake_app.test_client()
    before = scrape(fake_app)
    for _ in range(2):
        response = client.get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/metadata", headers={
            **bearer(value_), "Accept": "application/dicom+json"})
        assert response.status_code == 200
    after = scrape(fake_app)
    seconds = "facade_pacs_request_duration_seconds_count"
    # Each PACS request timed once, under its operation kind: the owner look-ups (QIDO-RS) the
    # first time only, the series metadata each time.
    paths = [urlsplit(call.request.url).path for call in pacs.calls]
    searches = [path for path in paths if path.rsplit("/", 1)[1] in ("studies", "series")]
    assert len(searches) == 2 and paths.count(f"/dicom-web/studies/{STUDY}/series/{SERIES}/metadata") == 2
    assert delta(before, after, seconds, operation="search") == 2
    assert delta(before, after, seconds, operation="metadata") == 2
    assert sum(delta(before, after, seconds, operation=kind) for kind in OPERATIONS) == len(paths) == 4
    lookups = "facade_cache_lookups_total"
    assert delta(before, after, lookups, cache="study_owners", result="miss") == 1
    assert delta(before, after, lookups, cache="study_owners", result="hit") == 1
    assert delta(before, after, lookups, cache="series_owners", result="miss") == 1
    assert delta(before, after, lookups, cache="series_owners", result="hit") == 1


@pytest.mark.parametrize("failure, error", [
    (requests.ConnectionError("refused"), "unavailable"),
    (requests.ReadTimeout("silent"), "timeout"),
    (500, "server_error"),
])
def test_pacs_failures_are_counted_by_operation_and_kind(fake_app, failure, error):
    value_ = token(fake_app, scope="patient/*.rs", patient=fake_pacs.PATIENT_ID)
    before = scrape(fake_app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        kwargs = {"status": failure} if isinstance(failure, int) else {"body": failure}
        mock.add(responses.GET, re.compile(re.escape(FAKE_PACS) + "/studies.*"), **kwargs)
        response = fake_app.test_client().get(f"/fhir/ImagingStudy?patient={fake_pacs.PATIENT_ID}",
                                              headers=bearer(value_))
    assert response.status_code in (502, 503, 504)
    after = scrape(fake_app)
    assert delta(before, after, "facade_pacs_errors_total", operation="search", error=error) >= 1


def test_a_streamed_study_is_an_active_stream_until_it_is_closed(fake_app, pacs):
    value_ = token(fake_app, scope="patient/*.rs", patient=fake_pacs.PATIENT_ID)
    client = fake_app.test_client()
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    before = scrape(fake_app)
    response = client.get(f"/dicomweb/studies/{STUDY}", headers={**bearer(value_), "Accept": accept}, buffered=False)
    assert response.status_code == 200 and response.is_streamed
    during = scrape(fake_app)
    assert delta(before, during, "facade_active_streams") == 1
    assert b"DICM" in b"".join(response.response)
    response.close()
    after = scrape(fake_app)
    assert delta(before, after, "facade_active_streams") == 0
    assert delta(before, after, "facade_pacs_request_duration_seconds_count", operation="retrieve") == 1


def test_no_patient_id_uid_or_token_in_the_metrics(fake_app, pacs):
    """Drive every kind of route with known identifiers, then search the whole exposition for them."""
    value_ = token(fake_app, scope="patient/*.rs", patient=fake_pacs.PATIENT_ID)
    headers = bearer(value_)
    client = fake_app.test_client()
    base = f"/dicomweb/studies/{STUDY}"
    for path in (f"/fhir/Patient/{fake_pacs.PATIENT_ID}", f"/fhir/Patient/{OTHER_PATIENT}",
                 f"/fhir/ImagingStudy?patient={fake_pacs.PATIENT_ID}", f"/fhir/ImagingStudy/{STUDY}",
                 f"/fhir/ImagingStudy?identifier=urn:oid:{STUDY}", f"{base}/metadata", f"{base}/series",
                 f"{base}/series/{SERIES}/instances/{fake_pacs.DEFAULT_SOP}/frames/1",
                 f"{base}/series/{SERIES}/instances/{fake_pacs.DEFAULT_SOP}/rendered",
                 f"/dicomweb/studies?PatientID={fake_pacs.PATIENT_ID}", f"/nowhere/{STUDY}/{fake_pacs.PATIENT_ID}"):
        client.get(path, headers=headers)
    client.post("/auth/revoke", data={"token": value_})
    text = fake_app.test_client().get("/metrics").get_data(as_text=True)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"facade_http_requests", "facade_http_request_duration_seconds", "facade_pacs_request_duration_seconds",
            "facade_pacs_errors", "facade_cache_lookups", "facade_active_streams"} <= families
    assert "route=\"/fhir/Patient/<patient_id>\"" in text
    for secret in (fake_pacs.PATIENT_ID, OTHER_PATIENT, STUDY, SERIES, fake_pacs.DEFAULT_SOP, value_,
                   value_.split(".")[2]):
        assert secret not in text
    # Routes are templates only: no route label holds a UID-like number.
    assert not re.search(r'route="[^"]*\d+\.\d+', text)
