"""The DICOMweb proxy under its production server (gunicorn, gunicorn.conf.py) against a real Orthanc.

Whole-study retrieval there relays large part bodies with splice(2) (fhir_facade.dicomweb.zerocopy),
writing to the client socket beside gunicorn's own framing: these tests check the bytes and
the HTTP framing a client sees, over HTTP/1.1 (chunked, keep-alive) and HTTP/1.0, for HEAD,
and after a client that went away.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

import devpacs
import samples
from multipart_parsers import parse_by_boundary, parse_by_length

ROOT = Path(__file__).resolve().parents[3]
PATIENT = "DW-GUNICORN"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: 384 x 400 x 16-bit pixels: parts of about 300 KB, well above zerocopy.MIN_SPLICE.
ROWS, COLUMNS = 384, 400


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def served(orthanc, tmp_path_factory):
    """Store a three-instance study, start gunicorn on a free loopback port; yield what tests need."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored = {}
    for n in (1, 2, 3):
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=n, Modality="OT", Rows=ROWS, Columns=COLUMNS)
        if n == 2:  # boundary-like bytes inside a body that is spliced, not searched
            ds.add_new(0x00090010, "LO", "FACADE TEST")
            ds.add_new(0x00091001, "OB", b"\r\n--" * 5000)
        data = devpacs.to_part10(ds)
        assert devpacs.store_file(orthanc.url, data) is not None
        stored[str(ds.SOPInstanceUID)] = sha(data)
    workdir = tmp_path_factory.mktemp("gunicorn")
    env, port = _facade_env(orthanc.dicomweb_url, workdir)
    from app import create_app
    from fhir_facade import config
    from smart.tokens.jwt import issue_access_token
    with create_app(config.from_environ(env)).app_context():
        token, _ = issue_access_token("gunicorn-test", "tester", "patient/ImagingStudy.rs",
                                      context={"patient": PATIENT})
    process, log_path = _start_gunicorn(env, workdir / "http")
    try:
        _wait_until_up(process, log_path, lambda: _http_get(port, "/fhir/metadata").startswith(b"HTTP/1.1 200"))
        yield {"port": port, "token": token, "study": study, "series": series, "stored": stored, "log": log_path,
               "path": f"/dicomweb/studies/{study}", "env": env, "workdir": workdir}
    finally:
        _stop(process)


def _facade_env(pacs_url: str, workdir: Path) -> tuple[dict, int]:
    """The environment of a one-worker, four-thread facade on a free loopback port whose database
    (SQLite in *workdir*) is initialised; and the port."""
    port = devpacs.free_port()
    env = dict(os.environ, FACADE_PACS_URL=pacs_url, FACADE_PUBLIC_URL=f"http://127.0.0.1:{port}",
               FACADE_HOST="127.0.0.1", FACADE_PORT=str(port), FACADE_DATABASE_URL=f"sqlite:///{workdir}/facade.db",
               FACADE_WORKERS="1", FACADE_THREADS="4", HOME=str(workdir / "home"))
    env.pop("XDG_RUNTIME_DIR", None)  # so gunicorn's default control socket would be under HOME
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env, port


def _start_gunicorn(env: dict, workdir: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """The production configuration plus *args*, with the splicer's debug line in the error log."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_config = workdir / "logging.json"
    log_config.write_text(json.dumps({"loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "fhir_facade.dicomweb.zerocopy": {"level": "DEBUG", "handlers": ["error_console"], "propagate": False}}}))
    log_path = workdir / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--log-config-json",
                                    str(log_config), *args, "app:create_app()"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return process, log_path


def _stop(process: subprocess.Popen) -> None:
    devpacs.stop_process(process, 20)


def _http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(64)


def _wait_until_up(process: subprocess.Popen, log_path: Path, answers) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log_path.read_text()}")
        try:
            if answers():
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer:\n{log_path.read_text()}")


def headers(served) -> dict:
    return {"Authorization": f"Bearer {served['token']}", "Accept": ACCEPT}


def check_parts(served, body: bytes, content_type: str) -> None:
    for parse in (parse_by_boundary, parse_by_length):
        parts = parse(body, content_type)
        assert sorted(sha(data) for _, data in parts) == sorted(served["stored"].values())
        for part_headers, _ in parts:
            assert part_headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"


def spliced_lines(served) -> list[str]:
    return [line for line in served["log"].read_text().splitlines() if "spliced" in line]


def test_whole_study_is_spliced_chunked_and_byte_identical_on_a_kept_alive_connection(served):
    before = len(spliced_lines(served))
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=30)
    for _ in range(2):
        conn.request("GET", served["path"], headers=headers(served))
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        check_parts(served, body, response.getheader("Content-Type"))
    # The same connection still speaks HTTP: a QIDO-RS answer after the two studies.
    conn.request("GET", f"/dicomweb/studies/{served['study']}/series",
                 headers={"Authorization": f"Bearer {served['token']}", "Accept": "application/dicom+json"})
    response = conn.getresponse()
    assert response.status == 200
    assert [row["0020000E"]["Value"][0] for row in json.loads(response.read())] == [served["series"]]
    conn.close()
    # Each retrieval spliced all three part bodies.
    lines = spliced_lines(served)[before:]
    assert len(lines) == 2 and all(line.endswith("in 3 part bodies") for line in lines)


def get_study(served, conn: http.client.HTTPConnection) -> None:
    """GET the whole study on *conn*; check status and parts."""
    conn.request("GET", served["path"], headers=headers(served))
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200
    check_parts(served, body, response.getheader("Content-Type"))


def request_head(served, method: str, version: str, close: bool) -> bytes:
    """The request line and header block, as a client writes them on a socket."""
    return (f"{method} {served['path']} {version}\r\nHost: 127.0.0.1\r\n"
            + ("Connection: close\r\n" if close else "")
            + "".join(f"{k}: {v}\r\n" for k, v in headers(served).items()) + "\r\n").encode()


def raw_request(served, method: str, version: str) -> bytes:
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=30) as sock:
        sock.sendall(request_head(served, method, version, close=True))
        received = bytearray()
        while chunk := sock.recv(1 << 16):
            received += chunk
    return bytes(received)


def check_unframed_study(served, answer: bytes, status_line: str) -> None:
    """An answer read until the connection closed: no chunk framing, and the study's parts intact."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(status_line)
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert "transfer-encoding" not in fields
    check_parts(served, body, fields["content-type"])


def test_http_1_0_gets_the_body_unframed_until_the_connection_closes(served):
    check_unframed_study(served, raw_request(served, "GET", "HTTP/1.0"), "HTTP/1.0 200")


def test_head_sends_headers_only_and_the_connection_stays_usable(served):
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=30)
    conn.request("HEAD", served["path"], headers=headers(served))
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    get_study(served, conn)
    conn.close()


def test_a_client_that_goes_away_mid_study_leaves_the_server_serving(served):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", served["port"]), timeout=30) as sock:
            sock.sendall(request_head(served, "GET", "HTTP/1.1", close=False))
            assert sock.recv(1 << 16).startswith(b"HTTP/1.1 200")
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=30)
    get_study(served, conn)
    conn.close()


def uwsgi_request(port: int, path: str, variables: dict) -> bytes:
    """One request in the uWSGI protocol (a 4-byte header, then length-prefixed vars), the answer whole."""
    pairs = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
             "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port),
             "REMOTE_ADDR": "127.0.0.1", **variables}
    block = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
                     for k, v in pairs.items())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(block), 0) + block)
        received = bytearray()
        while chunk := sock.recv(1 << 16):
            received += chunk
    return bytes(received)


def test_behind_the_uwsgi_protocol_nothing_is_spliced_and_the_parts_are_intact(served):
    """gunicorn frames nothing under ``--protocol uwsgi``: chunk framing from the splicer would corrupt parts."""
    port = devpacs.free_port()
    env = dict(served["env"], FACADE_PORT=str(port))
    process, log_path = _start_gunicorn(env, served["workdir"] / "uwsgi", "--protocol", "uwsgi",
                                        "--uwsgi-allow-from", "127.0.0.1")
    try:
        _wait_until_up(process, log_path, lambda: uwsgi_request(port, "/fhir/metadata", {}).startswith(b"HTTP/1.1 200"))
        answer = uwsgi_request(port, served["path"], {"HTTP_AUTHORIZATION": f"Bearer {served['token']}",
                                                      "HTTP_ACCEPT": ACCEPT})
    finally:
        _stop(process)
    check_unframed_study(served, answer, "HTTP/1.1 200")
    assert "spliced" not in log_path.read_text()


def test_no_control_socket_is_opened_unless_asked_for(served):
    """gunicorn's default control socket ($HOME/.gunicorn/gunicorn.ctl) would be shared between instances."""
    assert served["log"].read_text().count("Booting worker") >= 1
    assert not (served["workdir"] / "home" / ".gunicorn").exists()


def test_zero_copy_can_be_switched_off(served):
    port = devpacs.free_port()
    env = dict(served["env"], FACADE_PORT=str(port), FACADE_ZERO_COPY="0")
    process, log_path = _start_gunicorn(env, served["workdir"] / "copy")
    try:
        _wait_until_up(process, log_path, lambda: _http_get(port, "/fhir/metadata").startswith(b"HTTP/1.1 200"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        get_study(served, conn)
        conn.close()
    finally:
        _stop(process)
    assert "spliced" not in log_path.read_text()


def test_pixel_data_bulk_data_of_a_large_big_endian_instance_is_spliced_as_one_little_endian_part(served, orthanc):
    """bulk/7fe00010 is every frame in one part: merged parts through the splicer stay byte-exact."""
    from pydicom.uid import ExplicitVRBigEndian
    count = 12  # 12 x 384 x 400 x 2 bytes = 3.5 MiB: streamed, not read whole
    ds = samples.make_instance(transfer_syntax=ExplicitVRBigEndian, PatientID=PATIENT, NumberOfFrames=count,
                               Rows=ROWS, Columns=COLUMNS, Modality="OT")
    assert devpacs.store_file(orthanc.url, devpacs.to_part10(ds)) is not None
    expected = b"".join(samples._pattern_frame(ROWS, COLUMNS, 1, 16, i) for i in range(count))
    before = len(spliced_lines(served))
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=30)
    conn.request("GET", f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                        f"{ds.SOPInstanceUID}/bulk/7fe00010",
                 headers={"Authorization": f"Bearer {served['token']}",
                          "Accept": 'multipart/related; type="application/octet-stream"'})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    [(part_headers, data)] = parse_by_boundary(body, response.getheader("Content-Type"))
    assert sha(data) == sha(expected)
    assert part_headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert "content-length" not in part_headers
    lines = spliced_lines(served)[before:]
    assert len(lines) == 1 and lines[0].endswith(f"in {count} part bodies")


def test_a_frame_list_of_the_facades_full_length_fits_the_request_line(served):
    """1000 frame numbers (the facade's cap) make a request line over gunicorn's default 4094 bytes."""
    sop = sorted(served["stored"])[0]
    frames = ",".join(["0001"] * 1000)
    path = f"{served['path']}/series/{served['series']}/instances/{sop}/frames/{frames}"
    assert 4094 < len(f"GET {path} HTTP/1.1") <= 8190
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    conn.request("GET", path, headers={"Authorization": f"Bearer {served['token']}",
                                       "Accept": 'multipart/related; type="application/octet-stream"'})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body[:300]
    parts = parse_by_boundary(body, response.getheader("Content-Type"))
    assert len(parts) == 1000 and {sha(data) for _, data in parts} == {sha(parts[0][1])}
    assert len(parts[0][1]) == ROWS * COLUMNS * 2

    too_long = path.replace(frames, ",".join(["000000001"] * 1000))
    assert len(f"GET {too_long} HTTP/1.1") > 8190
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    conn.request("GET", too_long, headers={"Authorization": f"Bearer {served['token']}"})
    assert conn.getresponse().status == 414  # URI Too Long (RFC 9110 Section 15.5.15), from gunicorn
    conn.close()
