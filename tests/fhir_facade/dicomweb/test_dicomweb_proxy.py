"""Unit tests for the DICOMweb proxy (fhir_facade.dicomweb.api) with the PACS faked by `responses`."""
import base64
import hashlib
import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from dicom_json_builders import ds
from access_helpers import allow
from facade_helpers import FAKE_PACS, PUBLIC, bearer, token
from fhir_facade.dicomweb.api import rewrite_urls

STUDY, SERIES, SOP = "1.2.1", "1.2.1.1", "1.2.1.1.1"
PACS_HOST = "http://localhost:8042/dicom-web"  # Orthanc names itself, not the configured address


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies",
                 json=[ds(StudyInstanceUID=STUDY, PatientID="P1")], match=[
                     responses.matchers.query_param_matcher({"StudyInstanceUID": STUDY, "includefield": "00100020"})])
        mock.add(responses.GET, f"{FAKE_PACS}/studies",
                 json=[ds(StudyInstanceUID="1.2.9", PatientID="P2")], match=[
                     responses.matchers.query_param_matcher({"StudyInstanceUID": "1.2.9", "includefield": "00100020"})])
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[], match=[
                 responses.matchers.query_param_matcher({"StudyInstanceUID": "9.9", "includefield": "00100020"})])
        mock.add_callback(responses.GET, re.compile(re.escape(FAKE_PACS) + r"/studies/[0-9.]+/series\?"),
                          callback=series_owner, match=[series_owner_query])
        yield mock


def series_owner_query(request):
    """Matches the proxy's look-up of who owns a series (PatientID asked of one SeriesInstanceUID)."""
    query = dict(parse_qsl(urlsplit(request.url).query))
    return "SeriesInstanceUID" in query and "00100020" in request.url, "not a series owner look-up"


def series_owner(request):
    """Every series of a study belongs to the study's patient (P1 for STUDY, P2 otherwise)."""
    study = urlsplit(request.url).path.split("/")[-2]
    series = dict(parse_qsl(urlsplit(request.url).query))["SeriesInstanceUID"]
    row = ds(StudyInstanceUID=study, SeriesInstanceUID=series, PatientID="P1" if study == STUDY else "P2")
    return 200, {"Content-Type": "application/dicom+json"}, json.dumps([row])


BODY = b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + bytes(range(256)) * 100 + b"\r\n--xyz--\r\n"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=xyz'


@pytest.mark.parametrize("path, body, content_type", [
    (f"studies/{STUDY}", BODY, MULTIPART),  # multipart, rewritten
    (f"studies/{STUDY}/metadata", b"[]", "application/dicom+json"),  # DICOM JSON, re-serialised
])
def test_pacs_header_values_with_control_characters_are_not_relayed(fake_app, rsps, path, body, content_type):
    """A NUL in a PACS Warning reached the client as is (review): such a value is dropped."""
    rsps.add(responses.GET, f"{FAKE_PACS}/{path}", body=body, content_type=content_type,
             headers={"Warning": '299 pacs "a\x00b"', "ETag": '"ok"'})
    response = fake_app.test_client().get(f"/dicomweb/{path}", headers={
        **bearer(token(fake_app)),
        # As stored: a body that is no DICOM file is relayed, not transcoded (test_transcoding.py).
        "Accept": "*/*" if "metadata" in path else MULTIPART.rsplit(";", 1)[0] + "; transfer-syntax=*"})
    assert response.status_code == 200
    assert "Warning" not in response.headers
    if "metadata" not in path:
        assert response.headers["ETag"] == 'W/"ok"'


class _StallingBody(__import__("io").RawIOBase):
    """A PACS body that gives *head* and then times out (the PACS stalled mid-answer)."""

    def __init__(self, head: bytes):
        self.head = head

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.head:
            raise __import__("socket").timeout("timed out")
        n = min(len(buffer), len(self.head))
        buffer[:n], self.head = self.head[:n], self.head[n:]
        return n


@pytest.mark.parametrize("path, accept, content_type", [
    ("rendered", "image/jpeg", "image/jpeg"),  # relayed as is
    ("metadata", "application/dicom+json", "application/dicom+json"),  # read whole
])
def test_a_pacs_stalling_mid_body_is_504_not_500(fake_app, rsps, path, accept, content_type):
    """The first chunk of a relayed body, and a whole JSON body, are read before the status (review)."""
    import io
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
             json=[{"00080018": {"vr": "UI", "Value": [SOP]}, "00280010": {"vr": "US", "Value": [64]}}])
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/{path}",
             body=io.BufferedReader(_StallingBody(b"\xff\xd8 part of it")), content_type=content_type)
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/{path}",
                                          headers={**bearer(token(fake_app)), "Accept": accept})
    assert response.status_code == 504
    assert response.get_json()["status"] == 504


def test_study_retrieval_is_relayed_byte_for_byte(fake_app, rsps):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}", body=BODY, content_type=MULTIPART,
             headers={"Warning": '299 pacs "partial"', "Connection": "close", "Set-Cookie": "x=1"})
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers={
        **bearer(token(fake_app)), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200
    # The parts as the PACS sent them, framed by a boundary of the facade's own.
    content_type = response.headers["Content-Type"]
    assert re.fullmatch(r'multipart/related; type="application/dicom"; boundary=facade-[0-9a-f]{32}', content_type)
    own = content_type.rsplit("=", 1)[1].encode()
    assert response.data == BODY.replace(b"--xyz", b"--" + own)
    assert response.headers["Warning"] == '299 pacs "partial"'
    assert "Set-Cookie" not in response.headers
    sent = rsps.calls[-1].request
    assert sent.headers["Accept"] == 'multipart/related; type="application/dicom"; transfer-syntax=*'
    assert "Authorization" not in sent.headers  # the client's token never reaches the PACS


@pytest.mark.parametrize("path", [
    f"studies/{STUDY}", f"studies/{STUDY}/metadata", f"studies/{STUDY}/series",
    f"studies/{STUDY}/series/{SERIES}", f"studies/{STUDY}/series/{SERIES}/metadata",
    f"studies/{STUDY}/series/{SERIES}/instances/{SOP}", f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata",
    f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1", f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
])
def test_every_path_needs_a_token_and_the_right_patient(fake_app, rsps, path):
    client = fake_app.test_client()
    response = client.get(f"/dicomweb/{path}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert client.get(f"/dicomweb/{path}", headers=bearer("a.b.c")).status_code == 401
    other = token(fake_app, patient="P2")
    assert client.get(f"/dicomweb/{path}", headers=bearer(other)).status_code == 403
    wrong_scope = token(fake_app, scope="patient/Observation.rs")
    assert client.get(f"/dicomweb/{path}", headers=bearer(wrong_scope)).status_code == 403
    # none of these reached the PACS beyond the study -> patient (and series -> patient) look-ups
    assert all("/studies?" in call.request.url or series_owner_query(call.request)[0] for call in rsps.calls)


def test_unknown_study_is_404(fake_app, rsps):
    response = fake_app.test_client().get("/dicomweb/studies/9.9", headers=bearer(token(fake_app)))
    assert response.status_code == 404


@pytest.mark.parametrize("path, status", [
    ("studies/../etc/passwd", 400), (f"studies/{STUDY}/series/..%2F..", 400),
    (f"studies/{STUDY}/series/abc", 400), (f"studies/{STUDY}/nonsense", 404),
    (f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/0", 400),
    (f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1,x", 400),
    (f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames", 404),
])
def test_bad_paths_never_reach_the_pacs(fake_app, rsps, path, status):
    response = fake_app.test_client().get(f"/dicomweb/{path}", headers=bearer(token(fake_app)))
    assert response.status_code == status
    assert not any(f"{FAKE_PACS}/studies/" in call.request.url for call in rsps.calls)


def test_metadata_urls_point_at_the_facade(fake_app, rsps):
    metadata = [{"7FE00010": {"vr": "OB", "BulkDataURI": f"{PACS_HOST}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulk/7FE00010"}}]
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/metadata", json=metadata,
             content_type="application/dicom+json")
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/metadata", headers=bearer(token(fake_app)))
    assert response.status_code == 200
    uri = response.get_json()[0]["7FE00010"]["BulkDataURI"]
    assert uri == f"{PUBLIC}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulk/7FE00010"
    assert "8042" not in response.get_data(as_text=True)


def test_qido_studies_is_limited_to_the_token_patient(fake_app, rsps):
    rows = [ds(StudyInstanceUID=STUDY, PatientID="P1", RetrieveURL=f"{PACS_HOST}/studies/{STUDY}"),
            ds(StudyInstanceUID="1.2.9", PatientID="P10")]  # a PACS matching loosely
    rsps.add(responses.GET, f"{FAKE_PACS}/studies", json=rows)
    response = fake_app.test_client().get("/dicomweb/studies", headers=bearer(token(fake_app)))
    assert response.status_code == 200
    body = response.get_json()
    assert [r["0020000D"]["Value"][0] for r in body] == [STUDY]
    assert body[0]["00081190"]["Value"] == [f"{PUBLIC}/dicomweb/studies/{STUDY}"]
    sent = rsps.calls[-1].request.url
    assert "PatientID=P1" in sent


@pytest.mark.parametrize("query", ["PatientID=P2", "00100020=P2", "PatientID=p1", "PatientID=P1&PatientID=P2"])
def test_qido_for_another_patients_id_with_a_patient_token_is_empty(fake_app, rsps, query):
    """Issue 12: another PatientID is not replaced by the token's own; nothing is asked of the PACS."""
    response = fake_app.test_client().get(f"/dicomweb/studies?{query}", headers=bearer(token(fake_app)))
    assert response.status_code == 200
    assert response.get_json() == []
    assert len(rsps.calls) == 0


def test_qido_for_a_one_way_patient_id_looks_it_up_once_then_asks_for_its_patient_id(fake_app, rsps):
    from urllib.parse import parse_qsl, urlsplit

    from fhir_facade.dicom.patient_ids import to_fhir_id
    patient_id = "WARD3-BED4-" * 6 + "/X"  # rule 3 of the Patient id: only the one-way form is an id
    fhir_id = to_fhir_id(patient_id)
    assert fhir_id.startswith("dcm-h.")
    rows = [ds(StudyInstanceUID=STUDY, PatientID=patient_id), ds(StudyInstanceUID="1.2.9", PatientID="P2")]
    rsps.add(responses.GET, f"{FAKE_PACS}/studies", json=rows)
    client = fake_app.test_client()

    def asked():
        return [dict(parse_qsl(urlsplit(call.request.url).query, keep_blank_values=True)).get("PatientID")
                for call in rsps.calls]

    # Never seen: one look through the PACS's studies finds it; then its own PatientID is asked for.
    headers = bearer(token(fake_app, patient=fhir_id))
    for _ in range(2):
        body = client.get("/dicomweb/studies", headers=headers).get_json()
        assert [r["0020000D"]["Value"][0] for r in body] == [STUDY]
    assert asked() == [None, None, patient_id, patient_id]  # None: the study list, to its first repeated page
    # Ids the PACS does not hold, however many: an empty answer, and no new look at the
    # study list within SCAN_INTERVAL of the last one (it recorded every one-way id there is).
    rsps.calls.reset()
    for n in range(5):
        nobody = bearer(token(fake_app, patient=to_fhir_id(f"NOBODY-{n}-" * 10)))
        response = client.get("/dicomweb/studies", headers=nobody)
        assert response.status_code == 200 and response.get_json() == []
    assert asked() == []


def test_the_study_list_is_read_page_by_page_for_unseen_one_way_ids(fake_app, rsps, monkeypatch):
    from urllib.parse import parse_qsl, urlsplit

    from fhir_facade.pacs import studies
    from fhir_facade.dicom.patient_ids import to_fhir_id
    monkeypatch.setattr(studies, "SCAN_PAGE", 2)
    patient_id = "PAGE3-" * 12
    pages = [[ds(StudyInstanceUID="1.2.1", PatientID="P1"), ds(StudyInstanceUID="1.2.2", PatientID="P2")],
             [ds(StudyInstanceUID="1.2.3", PatientID="P3"), ds(StudyInstanceUID="1.2.4", PatientID=patient_id)],
             [ds(StudyInstanceUID="1.2.5", PatientID="P5")], []]  # a short page is not the end (a capped PACS)
    for page in pages:
        rsps.add(responses.GET, f"{FAKE_PACS}/studies", json=page)
    with fake_app.app_context():
        assert studies.get_studies().resolve_hashed(to_fhir_id(patient_id)) == patient_id
    assert [dict(parse_qsl(urlsplit(c.request.url).query))["offset"] for c in rsps.calls] == ["0", "2", "4", "5"]


def test_pacs_status_passes_through(fake_app, rsps):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}", status=404, body=b"")
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}", headers=bearer(token(fake_app)))
    assert response.status_code == 404


def test_rewrite_urls_leaves_foreign_urls_alone():
    data = [{"00081190": {"vr": "UR", "Value": ["https://elsewhere.example/x/studies/1"]}},
            {"00081190": {"vr": "UR", "Value": ["http://pacs:1/dicom-web/studies/1"]}}]
    rewrite_urls(data, "http://pacs:1/dicom-web", "https://f.example/dicomweb")
    assert data[0]["00081190"]["Value"] == ["https://elsewhere.example/x/studies/1"]
    assert data[1]["00081190"]["Value"] == ["https://f.example/dicomweb/studies/1"]
    assert json.dumps(data).count("pacs:1") == 0


@pytest.mark.parametrize("failure, status", [
    (__import__("requests").ConnectionError("refused"), 503),
    (__import__("requests").ReadTimeout("slow"), 504),
    (__import__("requests").ConnectTimeout("slow"), 504),
])
def test_pacs_unreachable_or_slow(fake_app, failure, status):
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", body=failure)
        response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers=bearer(token(fake_app)))
    assert response.status_code == status
    assert response.get_json()["status"] == status
    if status == 503:
        assert response.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("upstream, status", [(500, 502), (503, 503), (404, 404), (400, 404)])  # 400 on rendered: nothing to render
def test_pacs_error_statuses_are_mapped_without_its_body(fake_app, rsps, upstream, status):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
             json=[{"00080018": {"vr": "UI", "Value": [SOP]}, "00280010": {"vr": "US", "Value": [64]}}])
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
             status=upstream, body=b'{"Uri": "http://pacs.internal:8042/secret"}')
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
                                          headers={**bearer(token(fake_app)), "Accept": "image/jpeg"})
    assert response.status_code == status
    assert b"pacs.internal" not in response.data


def test_pacs_credentials_are_added_server_side(tmp_path):
    from facade_helpers import make_app
    app = make_app(tmp_path, FACADE_PACS_USER="svc", FACADE_PACS_PASSWORD="pacs-secret")
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[ds(StudyInstanceUID=STUDY, PatientID="P1")])
        response = app.test_client().get("/dicomweb/studies", headers=bearer(token(app)))
        sent = dict(mock.calls[0].request.headers)
    assert sent["Authorization"] == "Basic " + base64.b64encode(b"svc:pacs-secret").decode()
    assert response.status_code == 200 and "Cookie" not in sent
    assert b"pacs-secret" not in response.data and "svc" not in str(response.headers)


def test_backend_services_token_reaches_every_patients_study(fake_app, rsps):
    """Argonaut imaging via Backend Services: a system/ImagingStudy.rs token of a client granted
    every patient (``grant-access --all-patients``) has no patient limit."""
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/1.2.9/metadata", json=[], content_type="application/dicom+json")
    allow(fake_app)  # system/ reaches only the client's access list
    system = token(fake_app, scope="system/ImagingStudy.rs", patient=None)
    assert fake_app.test_client().get("/dicomweb/studies/1.2.9/metadata", headers=bearer(system)).status_code in (
        200, 204)
    patient = token(fake_app, scope="patient/ImagingStudy.rs", patient="P1")
    assert fake_app.test_client().get("/dicomweb/studies/1.2.9/metadata", headers=bearer(patient)).status_code == 403


def test_dw1_a_fixed_word_boundary_inside_a_part_does_not_split_it(fake_app, rsps):
    """A PACS whose boundary is a fixed word, and a part body that holds it after CRLF (DW-1)."""
    from multipart_parsers import parse_by_boundary, parse_by_length
    bodies = [b"DICM" + b"\r\n--BOUNDARY42\r\nContent-Type: x\r\n\r\n" * 50, b"second part", b"\r\n--BOUNDARY42--\r\n"]
    pacs_body = b"".join(b"--BOUNDARY42\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n%s\r\n"
                         % (len(data), data) for data in bodies) + b"--BOUNDARY42--\r\n"
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}", body=pacs_body,
             content_type='multipart/related; type="application/dicom"; boundary=BOUNDARY42')
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers={
        **bearer(token(fake_app)), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200
    for parse in (parse_by_boundary, parse_by_length):
        assert [data for _, data in parse(response.data, response.headers["Content-Type"])] == bodies


def test_a_strong_etag_of_a_reframed_answer_becomes_weak(fake_app, rsps):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}", body=BODY, content_type=MULTIPART,
             headers={"ETag": '"v1"'})
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers={
        **bearer(token(fake_app)), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.headers["ETag"] == 'W/"v1"'


def test_a_representation_the_pacs_cannot_produce_falls_back_to_the_next_accepted(fake_app, rsps):
    frame = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1"
    octet = b"--xyz\r\nContent-Type: application/octet-stream\r\n\r\n" + bytes(512) + b"\r\n--xyz--\r\n"

    def pacs(request):
        if "image/jpeg" in request.headers["Accept"]:
            return 400, {}, b""  # cannot transcode 16-bit pixels to JPEG Baseline
        return 200, {"Content-Type": "multipart/related; type=\"application/octet-stream\"; boundary=xyz"}, octet

    rsps.add_callback(responses.GET, frame, callback=pacs)
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",  # the frame exists
             json=[{**ds(SOPInstanceUID=SOP, NumberOfFrames="1"), "00280010": {"vr": "US", "Value": [16]}}])
    client, headers = fake_app.test_client(), bearer(token(fake_app))
    path = f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1"
    accept = 'multipart/related; type="image/jpeg", multipart/related; type="application/octet-stream"; q=0.5'
    response = client.get(path, headers={**headers, "Accept": accept})
    assert response.status_code == 200
    assert [c.request.headers["Accept"] for c in rsps.calls if "/frames/" in c.request.url] == [
        'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
        'multipart/related; type="application/octet-stream"']
    assert b"Content-Type: application/octet-stream" in response.data
    # Only JPEG accepted: 406, as before.
    only = client.get(path, headers={**headers, "Accept": 'multipart/related; type="image/jpeg"'})
    assert only.status_code == 406 and "1.2.840.10008.1.2.4.50" in only.get_json()["message"]


def test_a_pacs_that_breaks_off_before_the_first_part_gets_a_502_not_a_broken_200(fake_app, rsps):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}", body=b"garbage, no boundary at all" * 10,
             content_type=MULTIPART, auto_calculate_content_length=False)
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers={
        **bearer(token(fake_app)), "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 502
    assert "malformed multipart" in response.get_json()["message"]


def test_concurrent_unseen_one_way_ids_read_the_study_list_once(fake_app, rsps):
    import threading

    from fhir_facade.dicom.patient_ids import to_fhir_id
    from fhir_facade.pacs.studies import get_studies
    rsps.add(responses.GET, f"{FAKE_PACS}/studies", json=[ds(StudyInstanceUID="1.2.1", PatientID="P1")])
    rsps.add(responses.GET, f"{FAKE_PACS}/studies", json=[])
    results = []

    def resolve(n: int) -> None:
        with fake_app.app_context():
            results.append(get_studies().resolve_hashed(to_fhir_id(f"UNSEEN-{n}-" * 8)))

    threads = [threading.Thread(target=resolve, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [None] * 8 and len(rsps.calls) == 2  # one list: a page, then the empty page that ends it


def test_a_representation_the_pacs_refused_is_not_asked_for_again_for_that_instance(fake_app, rsps):
    """Big Endian frames as stored: Orthanc answers 500 each time; the facade stops asking."""
    frames = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames"
    frame = b"\x01\x02" * 32

    def pacs(request):
        if request.headers["Accept"].endswith("transfer-syntax=*"):
            return 500, {}, b"{}"
        syntax = "transfer-syntax=1.2.840.10008.1.2.1"
        return 200, {"Content-Type": f'multipart/related; type="application/octet-stream; {syntax}"; boundary=b'}, \
            b"--b\r\nContent-Type: application/octet-stream; " + syntax.encode() + b"\r\n\r\n" + frame \
            + b"\r\n--b--\r\n"

    rsps.add_callback(responses.GET, re.compile(re.escape(frames) + "/[0-9]+"), callback=pacs)
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
             json=[{**ds(StudyInstanceUID=STUDY, SOPInstanceUID=SOP), "00280010": {"vr": "US", "Value": [8]},
                    "00280008": {"vr": "IS", "Value": [3]}}])
    client, headers = fake_app.test_client(), {**bearer(token(fake_app)),
                                               "Accept": "application/octet-stream; transfer-syntax=*"}
    for n in (1, 2, 3, 1):
        response = client.get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/{n}", headers=headers)
        assert response.status_code == 200 and response.data == frame
        assert response.headers["Content-Type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    accepts = [c.request.headers["Accept"] for c in rsps.calls if "/frames/" in c.request.url]
    stored, native = ('multipart/related; type="application/octet-stream"; transfer-syntax=*',
                      'multipart/related; type="application/octet-stream"')
    # Refused twice (once may be a passing failure): then not asked for again.
    assert accepts == [stored, native, stored, native, native, native]


def test_a_passing_pacs_failure_is_not_taken_for_a_refusal(fake_app, rsps):
    frames = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1"
    rsps.add(responses.GET, frames, status=500)
    # ... and so does the instance the facade would decode the frame from itself.
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}", status=500)
    frame = b"\x01\x02" * 32
    rsps.add(responses.GET, frames, content_type='multipart/related; type="application/octet-stream"; boundary=b',
             body=b"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + frame + b"\r\n--b--\r\n")
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
             json=[{**ds(StudyInstanceUID=STUDY, SOPInstanceUID=SOP), "00280010": {"vr": "US", "Value": [8]}}])
    client, headers = fake_app.test_client(), {**bearer(token(fake_app)), "Accept": "application/octet-stream"}
    path = f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1"
    assert client.get(path, headers=headers).status_code == 406  # the PACS failed: nothing else to try
    second = client.get(path, headers=headers)
    assert second.status_code == 200 and second.data == frame


def test_a_token_for_a_patient_id_no_patient_id_has_gets_an_empty_qido_answer(fake_app, rsps):
    """dcm-h.5F2024... was issued for h_2024 by an older rule; it reads as a malformed one-way id."""
    response = fake_app.test_client().get("/dicomweb/studies", headers=bearer(token(fake_app, patient="dcm-h.5F2024")))
    assert response.status_code == 200 and response.get_json() == []


@pytest.mark.parametrize("accept", ["application/octet-stream", 'multipart/related; type="application/octet-stream"'])
def test_compressed_pixel_data_without_part_lengths_is_406(fake_app, rsps, accept):
    """A PACS that cannot decompress and sends its fragments, parts without Content-Length (DW-2 allows that)."""
    instance = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    rsps.add(responses.GET, f"{instance}/frames/1,2", status=500)
    rsps.add(responses.GET, f"{instance}/bulk/7fe00010", content_type='multipart/related; boundary=b', body=(
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n\r\n"  # the empty Basic Offset Table
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xd8 a JPEG fragment\r\n--b--\r\n"))
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
             json=[{**ds(StudyInstanceUID=STUDY, SOPInstanceUID=SOP), "00280010": {"vr": "US", "Value": [8]},
                    "00280011": {"vr": "US", "Value": [8]}, "00280100": {"vr": "US", "Value": [8]},
                    "00280008": {"vr": "IS", "Value": [2]}}])
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulk/7fe00010",
                                          headers={**bearer(token(fake_app)), "Accept": accept})
    assert response.status_code == 406 and "compressed" in response.get_json()["message"]


def test_a_failed_study_list_is_not_read_again_at_once(fake_app, rsps):
    from fhir_facade.dicom.patient_ids import to_fhir_id
    rsps.add(responses.GET, f"{FAKE_PACS}/studies", status=500)
    client = fake_app.test_client()
    for n in range(3):
        headers = bearer(token(fake_app, patient=to_fhir_id(f"FAILING-{n}-" * 8)))
        assert client.get("/dicomweb/studies", headers=headers).status_code in (200, 502)
    assert len(rsps.calls) == 1


def test_the_picker_shows_an_id_no_patient_id_has_as_unknown(fake_app):
    from smart.web.picker import describe_patient
    with fake_app.test_request_context():
        assert describe_patient("dcm-h.5F2024.5F0042") is None


@pytest.mark.parametrize("path", [
    f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1," + "9" * 4400,
    f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered?viewport=1," + "9" * 4400,
])
def test_numbers_too_long_for_int_are_400(fake_app, rsps, path):
    response = fake_app.test_client().get(f"/dicomweb/{path}", headers={**bearer(token(fake_app)),
                                                                        "Accept": "image/jpeg, */*"})
    assert response.status_code == 400


@pytest.mark.parametrize("query", ["limit=%C2%B2", "offset=%D9%A5", "limit=%EF%BC%95"])
def test_paging_numbers_are_ascii_digits(fake_app, query):
    """``str.isdigit`` took superscript, Arabic-Indic and fullwidth digits (review)."""
    response = fake_app.test_client().get(f"/dicomweb/studies?{query}", headers=bearer(token(fake_app)))
    assert response.status_code == 400
    assert "must be a non-negative integer" in response.get_json()["message"]


@pytest.mark.parametrize("quality", ["%C2%B2", "%E2%91%A0", "%D9%A5%D9%A0", "%EF%BC%95%EF%BC%90"])
def test_quality_is_ascii_digits(fake_app, quality):
    """A superscript two raised a 500; Arabic-Indic fifty passed to the PACS (review)."""
    response = fake_app.test_client().get(
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered?quality={quality}",
        headers={**bearer(token(fake_app)), "Accept": "image/jpeg"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "quality must be an integer from 1 to 100"


def _rendered_with(fake_app, rsps, headers):
    headers = dict(headers)
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
             body=b"\xff\xd8jpeg", headers=headers, content_type=headers.pop("Content-Type", None))
    return fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
                                      headers={**bearer(token(fake_app)), "Accept": "image/jpeg"})


def test_headers_of_a_body_relayed_as_is_are_made_safe(fake_app, rsps):
    """Cache-Control public on a token-protected image, the PACS's own address in Content-Location,
    and a doubled Content-Length (a 500 from gunicorn) had been relayed as they came (review)."""
    response = _rendered_with(fake_app, rsps, {
        "Content-Type": "image/jpeg", "Cache-Control": "public, max-age=3600",
        "Content-Location": f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered",
        "Content-Length": "6, 6", "ETag": '"e"'})
    assert response.status_code == 200 and response.data == b"\xff\xd8jpeg"
    assert "Cache-Control" not in response.headers
    assert response.headers["Content-Location"] == \
        f"{PUBLIC}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}/rendered"
    assert "Content-Length" not in response.headers  # not one number: the server frames the body
    assert response.headers["Content-Type"] == "image/jpeg" and response.headers["ETag"] == '"e"'


def test_a_content_location_elsewhere_on_the_pacs_is_not_relayed(fake_app, rsps):
    origin = FAKE_PACS.rsplit("/", 1)[0]
    response = _rendered_with(fake_app, rsps, {"Content-Type": "image/jpeg",
                                               "Content-Location": f"{origin}/app/explorer.html"})
    assert response.status_code == 200 and "Content-Location" not in response.headers


def test_a_body_type_with_control_characters_is_502(fake_app, rsps):
    response = _rendered_with(fake_app, rsps, {"Content-Type": "image/jpeg\x00"})
    assert response.status_code == 502
    assert response.get_json()["message"] == "the PACS answered an invalid Content-Type"


class _EndingBody(_StallingBody):
    """A PACS body that gives *head* and then ends (the connection closed)."""

    def readinto(self, buffer):
        return super().readinto(buffer) if self.head else 0


INSTANCE_PATH = f"studies/{STUDY}/series/{SERIES}/instances/{SOP}"
PART_HEAD = b"--b\r\nContent-Type: application/dicom\r\nContent-Length: 5000\r\n\r\n"


@pytest.mark.parametrize("read_whole, body", [
    (True, PART_HEAD + b"D" * 100),  # a small answer (its Content-Length says so) is read whole
    (False, PART_HEAD),  # a streamed one breaks off right after the part's headers
])
def test_a_single_part_cut_short_is_502_not_a_server_error_page(fake_app, rsps, read_whole, body):
    """Unwrapped (Accept: application/dicom), a part cut short had raised out of the response (review)."""
    import io
    rsps.add(responses.GET, f"{FAKE_PACS}/{INSTANCE_PATH}",
             body=body if read_whole else io.BufferedReader(_EndingBody(body)),
             headers={"Content-Length": str(len(body))} if read_whole else {},
             content_type='multipart/related; type="application/dicom"; boundary=b')
    response = fake_app.test_client().get(f"/dicomweb/{INSTANCE_PATH}",
                                          headers={**bearer(token(fake_app)), "Accept": "application/dicom"})
    assert response.status_code == 502
    assert "malformed multipart" in response.get_json()["message"]


def _rendered_from_a_real_pacs(tmp_path, head: list[tuple[str, str]], body: bytes):
    """GET rendered through an app whose PACS is a loopback HTTP server answering *head* and
    *body* (then closing) for it, and the study's owner for the rest. ``responses`` can
    neither repeat a header nor hold a body to its Content-Length."""
    import http.server
    import threading
    from facade_helpers import make_app

    class Pacs(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            rendered = self.path.endswith("/rendered")
            data = body if rendered else json.dumps([ds(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, PatientID="P1")]).encode()
            self.send_response(200)
            for name, value in head if rendered else [("Content-Type", "application/dicom+json"),
                                                      ("Content-Length", str(len(data)))]:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = rendered

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pacs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app(tmp_path, FACADE_PACS_URL=f"http://127.0.0.1:{server.server_port}/dicom-web")
        return app.test_client().get(f"/dicomweb/{INSTANCE_PATH}/rendered",
                                     headers={**bearer(token(app)), "Accept": "image/jpeg"})
    finally:
        server.shutdown()
        server.server_close()


def test_a_rendered_image_cut_short_is_502_not_a_short_200(tmp_path):
    """The PACS says 20,000 bytes, sends 6 and closes: a short 200 before (review)."""
    response = _rendered_from_a_real_pacs(tmp_path, [("Content-Type", "image/jpeg"), ("Content-Length", "20000")],
                                          b"\xff\xd8jpeg")
    assert response.status_code == 502
    assert response.get_json()["message"] == "the PACS broke off its answer"


def test_repeated_headers_of_a_body_relayed_as_is(tmp_path):
    """Two Content-Locations were joined into one string naming the PACS (review)."""
    head = [("Content-Type", "image/jpeg"), ("Content-Location", "/dicom-web/studies/1.2.1/rendered"),
            ("Content-Location", "/dicom-web/studies/9"), ("ETag", '"a"'), ("ETag", '"b"'),
            ("Content-Encoding", "identity"), ("Content-Encoding", "identity")]
    response = _rendered_from_a_real_pacs(tmp_path / "a", head, b"\xff\xd8jpeg")
    assert response.status_code == 200 and response.data == b"\xff\xd8jpeg"
    assert "Content-Location" not in response.headers and "ETag" not in response.headers
    assert response.headers["Content-Encoding"] == "identity, identity"  # a list, as sent
    twice = _rendered_from_a_real_pacs(tmp_path / "b", [("Content-Type", "image/jpeg"), ("Content-Type", "text/html")],
                                       b"\xff\xd8jpeg")
    assert twice.status_code == 502
    same = _rendered_from_a_real_pacs(tmp_path / "c", [("Content-Type", "image/jpeg"), ("Content-Type", "image/jpeg"),
                                                       ("Content-Length", "6"), ("Content-Length", "6")],
                                      b"\xff\xd8jpeg")
    assert same.status_code == 200 and same.headers["Content-Type"] == "image/jpeg"
    assert same.headers["Content-Length"] == "6" and same.data == b"\xff\xd8jpeg"


def test_a_large_single_part_with_a_part_length_that_is_not_a_number(fake_app, rsps):
    """Relayed as the PACS sent it ("12x"), it made gunicorn answer 500 (review)."""
    import io
    body = b"--b\r\nContent-Type: application/dicom\r\nContent-Length: 12x\r\n\r\n" + b"D" * (2 << 20) + b"\r\n--b--\r\n"
    rsps.add(responses.GET, f"{FAKE_PACS}/{INSTANCE_PATH}", body=io.BufferedReader(_EndingBody(body)),
             content_type='multipart/related; type="application/dicom"; boundary=b')
    response = fake_app.test_client().get(f"/dicomweb/{INSTANCE_PATH}",
                                          headers={**bearer(token(fake_app)),
                                                   "Accept": "application/dicom; transfer-syntax=*"})
    assert response.status_code == 200 and "Content-Length" not in response.headers
    assert response.data == b"D" * (2 << 20)
