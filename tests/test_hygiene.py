"""Logs without identifiers, no Host-built redirects, RFC 6750 challenges on 403, Vary: Origin."""
import logging

import pytest
import responses

from dicom_json_builders import ds
from facade_helpers import FAKE_PACS, bearer, token


def test_access_log_names_route_templates_not_patients(fake_app, caplog):
    value = token(fake_app, patient="SECRET-PATIENT-7")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[ds(StudyInstanceUID="1.2.1", PatientID="SECRET-PATIENT-7")])
        with caplog.at_level(logging.INFO, logger="facade.access"):
            client = fake_app.test_client()
            client.get("/fhir/Patient/SECRET-PATIENT-7", headers=bearer(value))
            client.get("/fhir/ImagingStudy?patient=SECRET-PATIENT-7", headers=bearer(value))
            client.get("/dicomweb/studies/1.2.1/metadata", headers=bearer(value))
    lines = [r.getMessage() for r in caplog.records if r.name == "facade.access"]
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        "GET /fhir/Patient/<patient_id>", "GET /fhir/ImagingStudy", "GET /dicomweb/studies/<path:rest>"]
    text = caplog.text
    assert "SECRET-PATIENT-7" not in text and "1.2.1" not in text and value not in text


def test_double_slash_is_not_redirected_to_the_host_header(fake_app):
    response = fake_app.test_client().get("//fhir/ImagingStudy", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "Location" not in response.headers


def test_403_carries_an_insufficient_scope_challenge(fake_app):
    client = fake_app.test_client()
    wrong = bearer(token(fake_app, scope="patient/Observation.rs"))
    for path in ("/fhir/ImagingStudy", "/dicomweb/studies"):
        response = client.get(path, headers=wrong)
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_vary_origin_even_for_origins_that_are_refused(fake_app):
    response = fake_app.test_client().get("/fhir/ImagingStudy", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers.get("Vary", "")


def test_forwarded_headers_are_ignored_unless_proxies_are_configured(tmp_path):
    from flask import request

    from facade_helpers import make_app
    seen = {}
    for proxies in (0, 1):
        app = make_app(tmp_path / str(proxies), FACADE_TRUSTED_PROXIES=proxies)

        @app.get("/probe")
        def probe():
            seen[proxies] = request.remote_addr
            return "ok"

        app.test_client().get("/probe", headers={"X-Forwarded-For": "203.0.113.9"},
                              environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert seen == {0: "127.0.0.1", 1: "203.0.113.9"}


def test_every_configuration_key_the_code_reads_comes_from_the_environment():
    import re
    from pathlib import Path

    from fhir_facade.config import SETTINGS, from_environ
    root = Path(__file__).resolve().parents[1]
    read = set()
    for path in list((root / "fhir_facade").rglob("*.py")) + list((root / "smart").rglob("*.py")) + [root / "app.py"]:
        read |= set(re.findall(r"config(?:\.get\(|\[)\"((?:FACADE|SMART)_[A-Z_]+)\"", path.read_text()))
    assert read <= {name for name, _, _ in SETTINGS}, read - {name for name, _, _ in SETTINGS}
    assert from_environ({"FACADE_QUERY_CACHE_TTL": "0", "SMART_REVOCATION_CACHE_SECONDS": "0"})[
        "FACADE_QUERY_CACHE_TTL"] == 0.0


def serve(app, path: str, headers: dict) -> tuple[str, bytes, bool]:
    """Run one request as a WSGI server does: iterate the body, close it whatever happens."""
    from werkzeug.test import EnvironBuilder
    statuses, received, failed = [], bytearray(), False
    body = app(EnvironBuilder(path=path, headers=headers).get_environ(), lambda s, h, e=None: statuses.append(s))
    try:
        for chunk in body:
            received += chunk
    except Exception:  # a server drops the connection
        failed = True
    finally:
        body.close()
    return statuses[0], bytes(received), failed


def test_a_streamed_answer_is_logged_when_it_ends_and_marked_when_cut_short(fake_app, caplog):
    # A DICOM file's start (preamble, DICM): relayed as stored, not read whole to be made one.
    study_body = (b"--xyz\r\nContent-Type: application/dicom\r\nContent-Length: 20000\r\n\r\n" + bytes(128)
                  + b"DICM" + b"x" * (20000 - 132) + b"\r\n--xyz--\r\n")
    headers = {**bearer(token(fake_app, patient="P1")),
               "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    multipart = 'multipart/related; type="application/dicom"; boundary=xyz'
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[ds(StudyInstanceUID="1.2.1", PatientID="P1")])
        # Streamed (no Content-Length, as Orthanc sends a study), whole, then cut off inside its part.
        for cut in (len(study_body), 12000):
            mock.add(responses.GET, f"{FAKE_PACS}/studies/1.2.1", body=study_body[:cut], content_type=multipart,
                     auto_calculate_content_length=False)
        with caplog.at_level(logging.INFO, logger="facade.access"):
            status, received, failed = serve(fake_app, "/dicomweb/studies/1.2.1", headers)
            reframed = len(study_body) + 2 * (len("facade-") + 32 - len("xyz"))  # two delimiters, own boundary
            assert (status, len(received), failed) == ("200 OK", reframed, False)
            status, received, failed = serve(fake_app, "/dicomweb/studies/1.2.1", headers)
            assert status == "200 OK" and failed and len(received) < len(study_body)
    lines = [r.getMessage() for r in caplog.records if r.name == "facade.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /dicomweb/studies/<path:rest> 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET /dicomweb/studies/<path:rest> 200 ") and lines[1].endswith("ms incomplete")


def test_head_and_preflight_are_logged_complete_and_timed(fake_app, caplog):
    headers = {**bearer(token(fake_app, patient="P1")),
               "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}  # "abc" as stored
    body = b"--xyz\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nabc\r\n--xyz--\r\n"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[ds(StudyInstanceUID="1.2.1", PatientID="P1")])
        mock.add(responses.GET, f"{FAKE_PACS}/studies/1.2.1", body=body, auto_calculate_content_length=False,
                 content_type='multipart/related; type="application/dicom"; boundary=xyz')
        with caplog.at_level(logging.INFO, logger="facade.access"):
            client = fake_app.test_client()
            assert client.head("/dicomweb/studies/1.2.1", headers=headers).status_code == 200
            assert client.options("/dicomweb/studies/1.2.1", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "GET"}).status_code == 204
    lines = [r.getMessage() for r in caplog.records if r.name == "facade.access"]
    assert len(lines) == 2 and all(line.endswith("ms") for line in lines), lines
    assert lines[0].startswith("HEAD /dicomweb/studies/<path:rest> 200 ")


@pytest.mark.parametrize("version, chunked", [("HTTP/1.0", False), ("HTTP/1.1", True)])
def test_the_dev_server_answers_http_1_0_without_chunks(version, chunked):
    """``python app.py``: a streamed body for an HTTP/1.0 client is sent unframed, not chunked."""
    import socket
    import threading

    from werkzeug.serving import make_server

    from app import _QuietRequestHandler

    def streamed(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter([b"first ", b"second"])

    server = make_server("127.0.0.1", 0, streamed, threaded=True, request_handler=_QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answers = []
        for _ in range(2):  # an HTTP/1.1 connection after: the handler class is unchanged
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
                sock.sendall(f"GET /x {version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            answers.append(data)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    for answer in answers:
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(f"{version} 200".encode())
        assert (b"transfer-encoding: chunked" in head.lower()) is chunked
        assert body == (b"6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n" if chunked else b"first second")
