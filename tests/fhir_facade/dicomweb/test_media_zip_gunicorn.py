"""Review: the DICOM-media ZIP under the production server (gunicorn, gunicorn.conf.py), whose
blocks the facade writes to the client socket itself (zerocopy.write_blocks), against Orthanc.

HTTP/1.1 (chunked) and HTTP/1.0 bodies are whole ZIPs with byte-identical members; HEAD sends no
body; clients that go away mid-download leave the worker serving, with no file descriptor or PACS
connection left open; concurrent downloads all get the right bytes.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import io
import os
import socket
import struct
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

import devpacs
import samples
from test_dicomweb_gunicorn import _facade_env, _http_get, _start_gunicorn, _stop, _wait_until_up

ROOT = Path(__file__).resolve().parents[3]
PATIENT = "ZIP-GUNICORN"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def served(orthanc, tmp_path_factory):
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored = {}
    for n, (rows, columns) in enumerate([(1024, 1024), (8, 8), (2048, 2200), (700, 700), (512, 512)], 1):
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=n, Modality="OT", Rows=rows, Columns=columns)
        data = devpacs.to_part10(ds)
        assert devpacs.store_file(orthanc.url, data) is not None
        stored[str(ds.SOPInstanceUID)] = sha(data)
    workdir = tmp_path_factory.mktemp("zip-gunicorn")
    env, port = _facade_env(orthanc.dicomweb_url, workdir)
    from app import create_app
    from fhir_facade import config
    from smart.tokens.jwt import issue_access_token
    with create_app(config.from_environ(env)).app_context():
        token, _ = issue_access_token("zip-test", "tester", "patient/ImagingStudy.rs", context={"patient": PATIENT})
        other, _ = issue_access_token("zip-test", "tester", "patient/ImagingStudy.rs", context={"patient": "NOBODY"})
    process, log_path = _start_gunicorn(env, workdir / "http")
    try:
        _wait_until_up(process, log_path, lambda: _http_get(port, "/fhir/metadata").startswith(b"HTTP/1.1 200"))
        yield {"port": port, "token": token, "other": other, "stored": stored, "process": process,
               "path": f"/dicomweb/studies/{study}", "log": log_path,
               "orthanc_port": int(orthanc.dicomweb_url.split(":")[2].split("/")[0])}
    finally:
        _stop(process)


def request_head(served, method="GET", version="HTTP/1.1", token=None) -> bytes:
    return (f"{method} {served['path']} {version}\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token or served['token']}\r\nAccept: application/zip\r\n\r\n").encode()


def check_zip(served, body: bytes) -> None:
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    found = {}
    for name in archive.namelist()[:-1]:
        data = archive.read(name)
        found[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = sha(data)
    assert found == served["stored"]
    assert archive.namelist()[-1] == "DICOMDIR"


def get_zip(served) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    conn.request("GET", served["path"], headers={"Authorization": f"Bearer {served['token']}",
                                                 "Accept": "application/zip"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/zip"
    body = response.read()
    conn.close()
    return body


def worker_pid(served) -> int:
    children = Path(f"/proc/{served['process'].pid}/task/{served['process'].pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def open_fds(pid: int) -> list[str]:
    folder = Path(f"/proc/{pid}/fd")
    found = []
    for fd in folder.iterdir():
        try:
            found.append(os.readlink(fd))
        except OSError:
            pass
    return sorted(found)


def pacs_connections(served, pid: int) -> int:
    """TCP connections of the worker to Orthanc's port, per /proc/<pid>/net/tcp and its fds."""
    inodes = {link[len("socket:["):-1] for link in open_fds(pid) if link.startswith("socket:[")}
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == served["orthanc_port"] and fields[9] in inodes:
                count += 1
    return count


def settled(served, pid: int) -> list[str]:
    """The worker's fds once a request in flight is over (up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        fds = open_fds(pid)
        if time.monotonic() > deadline or pacs_connections(served, pid) == 0:
            return fds
        time.sleep(0.2)


def test_http_1_1_and_1_0_and_head(served):
    check_zip(served, get_zip(served))
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=60) as sock:
        sock.sendall(request_head(served, version="HTTP/1.0"))
        answer = b""
        while chunk := sock.recv(1 << 20):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower()
    check_zip(served, body)
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    conn.request("HEAD", served["path"], headers={"Authorization": f"Bearer {served['token']}",
                                                  "Accept": "application/zip"})
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()


def test_another_patients_token_gets_no_zip(served):
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=60) as sock:
        sock.sendall(request_head(served, token=served["other"]))
        assert sock.recv(64).startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_clients_that_go_away_leave_no_fd_and_no_pacs_connection(served, method):
    pid = worker_pid(served)
    check_zip(served, get_zip(served))
    before = settled(served, pid)
    for reset in (False, True, False, True):
        sock = socket.create_connection(("127.0.0.1", served["port"]), timeout=60)
        if reset:  # an abortive close: RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(request_head(served, method))
        assert sock.recv(1 << 16).startswith(b"HTTP/1.1 200")
        sock.close()
    time.sleep(1)
    assert worker_pid(served) == pid  # the same worker, still serving
    check_zip(served, get_zip(served))
    after = settled(served, pid)
    assert pacs_connections(served, pid) == 0
    assert after == before


def test_concurrent_downloads_get_the_right_bytes(served):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: get_zip(served), range(6)))
    for body in bodies:
        check_zip(served, body)
