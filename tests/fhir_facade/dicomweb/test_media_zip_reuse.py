"""What the DICOM-media ZIP reuses, against a real Orthanc: memory (instances read into buffers that take
turns, media.Places) must never show in the members, whether the blocks go through the WSGI server or are
written to the socket by the facade (gunicorn, zerocopy.write_blocks), over HTTP/1.1 and HTTP/1.0; DICOMDIRs
and instance headers kept between downloads (media_directory.Directories) must be those of the instances
sent."""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy
import pydicom
import pytest
from pydicom.fileset import FileSet

import devpacs
import samples
from facade_helpers import bearer, make_app, token
# The production-server helpers of the DICOMweb gunicorn tests (same folder, imported by module name).
from test_dicomweb_gunicorn import _http_get, _start_gunicorn, _stop, _wait_until_up

from fhir_facade.dicomweb import media, media_directory

ROOT = Path(__file__).resolve().parents[3]
PATIENT = "ZIP-SIZES"
#: Pixel Data of each instance (bytes, 16-bit square images): around media.BLOCK, in and out of the
#: sizes read into reused memory, one above media.REUSED_UP_TO, and runs of equal sizes as in a CT series
#: (where an instance read into memory still referred to would overwrite all of it).
PIXEL_BYTES = [20_000, 300_000, 600_000, 5_000, 270_000, 1_500_000, 100_000, 262_144, 258_000, 420_000,
               9_000_000, 320_000, 2_000] + [524_288] * 4 + [300_000] * 3


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def instance(study: str, series: str, number: int, pixel_bytes: int, rng) -> bytes:
    side = int((pixel_bytes // 2) ** 0.5)
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                               InstanceNumber=number, Modality="OT", Rows=side, Columns=side,
                               frames=[rng.bytes(side * side * 2)])
    return devpacs.to_part10(ds)


@pytest.fixture(scope="module")
def sized(orthanc, tmp_path_factory):
    """One study of instances of alternating sizes stored in Orthanc, and an app on it."""
    rng = numpy.random.default_rng(15)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored = {}
    for number, pixel_bytes in enumerate(PIXEL_BYTES, 1):
        data = instance(study, series, number, pixel_bytes, rng)
        assert devpacs.store_file(orthanc.url, data) is not None
        stored[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = sha(data)
    app = make_app(tmp_path_factory.mktemp("zip-sizes"), FACADE_PACS_URL=orthanc.dicomweb_url)
    return {"app": app, "study": study, "stored": stored, "token": token(app, patient=PATIENT),
            "orthanc": orthanc}


def check_zip(body: bytes, stored: dict[str, str], tmp_path: Path) -> list[zipfile.ZipInfo]:
    """Every member byte-identical to what was stored, every CRC right, the DICOMDIR listing them all."""
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None  # each member's CRC-32 checked against its bytes
    members = archive.infolist()
    assert members[-1].filename == "DICOMDIR"
    got = {}
    for member in members[:-1]:
        data = archive.read(member)
        got[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = sha(data)
    assert got == stored
    archive.extractall(tmp_path)
    file_set = FileSet(pydicom.dcmread(tmp_path / "DICOMDIR"))
    assert sorted(i.FileID.replace("\\", "/") for i in file_set) == sorted(m.filename for m in members[:-1])
    assert {i.SOPInstanceUID for i in file_set} == set(stored)
    return members


def test_members_of_every_size_come_out_as_stored_through_the_test_client(sized, tmp_path):
    answer = sized["app"].test_client().get(f"/dicomweb/studies/{sized['study']}",
                                            headers={**bearer(sized["token"]), "Accept": "application/zip"})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    members = check_zip(answer.data, sized["stored"], tmp_path)  # .data holds every block before joining
    reused = [m.file_size for m in members[:-1] if media.BLOCK <= m.file_size <= media.REUSED_UP_TO]
    assert len(reused) >= 2 * media.Places.TURNS  # each buffer used at least twice


# --------------------------------------------------------------------------- under gunicorn

@pytest.fixture(scope="module")
def gunicorn_zip(sized, tmp_path_factory):
    """gunicorn with the production configuration (zero copy on) in front of the same Orthanc."""
    workdir = tmp_path_factory.mktemp("zip-gunicorn")
    port = devpacs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FACADE_PACS_URL=sized["orthanc"].dicomweb_url, FACADE_PUBLIC_URL=url,
               FACADE_HOST="127.0.0.1", FACADE_PORT=str(port), FACADE_DATABASE_URL=f"sqlite:///{workdir}/facade.db",
               FACADE_WORKERS="1", FACADE_THREADS="4", HOME=str(workdir / "home"))
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("FACADE_ZERO_COPY", None)
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    from app import create_app
    from fhir_facade import config
    from smart.tokens.jwt import issue_access_token
    with create_app(config.from_environ(env)).app_context():
        value, _ = issue_access_token("zip-test", "tester", "patient/ImagingStudy.rs", context={"patient": PATIENT})
    process, log_path = _start_gunicorn(env, workdir / "http")
    try:
        _wait_until_up(process, log_path, lambda: _http_get(port, "/fhir/metadata").startswith(b"HTTP/1.1 200"))
        yield {"port": port, "headers": {"Authorization": f"Bearer {value}", "Accept": "application/zip"},
               "path": f"/dicomweb/studies/{sized['study']}", "log": log_path}
    finally:
        _stop(process)


class HTTP10Connection(http.client.HTTPConnection):
    """http.client speaking HTTP/1.0: the answer is not chunked and ends when the connection closes."""

    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


@pytest.mark.parametrize("connection", [http.client.HTTPConnection, HTTP10Connection], ids=["http/1.1", "http/1.0"])
def test_members_of_every_size_come_out_as_stored_through_gunicorn(sized, gunicorn_zip, connection, tmp_path):
    conn = connection("127.0.0.1", gunicorn_zip["port"], timeout=60)
    conn.request("GET", gunicorn_zip["path"], headers=gunicorn_zip["headers"])
    response = conn.getresponse()
    body = response.read()  # http.client checks the chunk framing, or reads until the close
    conn.close()
    assert response.status == 200, body[:300]
    assert response.getheader("Content-Type") == "application/zip"
    if connection is HTTP10Connection:
        assert response.version == 10 and response.getheader("Transfer-Encoding") is None
    else:
        assert response.getheader("Transfer-Encoding") == "chunked"
    check_zip(body, sized["stored"], tmp_path)


def test_the_gunicorn_under_test_writes_to_client_sockets_itself(gunicorn_zip):
    """The condition of zerocopy.write_blocks (zerocopy.client_socket) holds there: a multipart retrieval
    of the same study through it is spliced (its debug line), so the ZIP's blocks were written by writev."""
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn_zip["port"], timeout=60)
    conn.request("GET", gunicorn_zip["path"],
                 headers={**gunicorn_zip["headers"],
                          "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    assert any("spliced" in line for line in gunicorn_zip["log"].read_text().splitlines())


# --------------------------------------------------------------------------- DICOMDIRs and headers kept

@pytest.fixture
def small_study(orthanc, tmp_path):
    """A fresh app (empty Directories) and a study of four small instances in two series."""
    rng = numpy.random.default_rng(7)
    study, series = pydicom.uid.generate_uid(), [pydicom.uid.generate_uid() for _ in range(2)]
    stored, files = {}, []
    for number in range(4):
        data = instance(study, series[number % 2], number + 1, 2_000, rng)
        assert devpacs.store_file(orthanc.url, data) is not None
        stored[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = sha(data)
        files.append(data)
    app = make_app(tmp_path / "app", FACADE_PACS_URL=orthanc.dicomweb_url)
    return {"app": app, "study": study, "series": series, "stored": stored, "orthanc": orthanc, "files": files,
            "token": token(app, patient=PATIENT)}


def download(study, tmp_path) -> tuple[bytes, list[zipfile.ZipInfo]]:
    answer = study["app"].test_client().get(f"/dicomweb/studies/{study['study']}",
                                            headers={**bearer(study["token"]), "Accept": "application/zip"})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    body = answer.data
    folder = tmp_path / f"zip{len(list(tmp_path.iterdir()))}"
    members = check_zip(body, study["stored"], folder)
    return zipfile.ZipFile(io.BytesIO(body)).read("DICOMDIR"), members


def counting(monkeypatch, fail: bool = False) -> list:
    """Wrap media_directory._read_header (every header parse of a ZIP): record the bytes parsed,
    or fail the download if it is called."""
    calls, real = [], media_directory._read_header

    def wrapper(data):
        if fail:
            raise AssertionError("a header was parsed again")
        calls.append(bytes(data))  # a copy: the instance's memory may be reused
        return real(data)
    monkeypatch.setattr(media_directory, "_read_header", wrapper)
    return calls


def whole_instances(calls: list, files: list) -> list:
    """The parses of whole instances among *calls*; every other call must be a header kept
    earlier, i.e. the beginning of one of *files*."""
    whole = [c for c in calls if c in files]
    assert all(any(f.startswith(c) for f in files) for c in calls if c not in files)
    return whole


def test_a_second_download_parses_no_header_and_writes_no_dicomdir(small_study, tmp_path, monkeypatch):
    heads = counting(monkeypatch)
    first, _ = download(small_study, tmp_path)
    assert sorted(heads) == sorted(small_study["files"])
    counting(monkeypatch, fail=True)

    def no_writer(*args, **kwargs):
        raise AssertionError("a DICOMDIR was written again")
    monkeypatch.setattr(media_directory, "Dicomdir", no_writer)
    monkeypatch.setattr(media_directory, "file_set_dicomdir", no_writer)
    second, _ = download(small_study, tmp_path)
    assert second == first


def test_one_more_instance_is_listed_in_the_next_dicomdir_and_only_its_header_parsed(small_study, tmp_path,
                                                                                      monkeypatch):
    first, _ = download(small_study, tmp_path)
    data = instance(small_study["study"], small_study["series"][1], 9, 3_000, numpy.random.default_rng(8))
    assert devpacs.store_file(small_study["orthanc"].url, data) is not None
    new_uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    small_study["stored"][new_uid] = sha(data)
    heads = counting(monkeypatch)
    second, members = download(small_study, tmp_path)  # check_zip: the DICOMDIR lists all five
    assert second != first and len(members) == 6
    assert whole_instances(heads, small_study["files"] + [data]) == [data]


def test_the_kept_headers_stay_within_their_budget(small_study, tmp_path, monkeypatch):
    head = max(len(media_directory._read_header(data)[1]) for data in small_study["files"])
    budget = 2 * head + head // 2  # room for two of these headers, not four
    monkeypatch.setattr(media_directory, "HEADS_CACHE_BYTES", budget)
    heads = counting(monkeypatch)
    first, _ = download(small_study, tmp_path)
    assert len(whole_instances(heads, small_study["files"])) == 4
    with small_study["app"].app_context():
        kept = media_directory.directories()
    sizes = [len(value) for value in kept._heads.values()]
    assert len(sizes) == 2 and kept._head_bytes == sum(sizes) <= budget
    # Without the DICOMDIR kept, the instances whose headers are no longer kept are parsed again
    # (in arrival order, each header kept pushes out the next one needed: up to all four).
    kept._dicomdirs.clear()
    heads.clear()
    second, _ = download(small_study, tmp_path)
    assert 2 <= len(whole_instances(heads, small_study["files"])) <= 4
    records = [pydicom.dcmread(io.BytesIO(d)).DirectoryRecordSequence for d in (first, second)]
    assert records[0] == records[1] and len(records[0]) == 1 + 1 + 2 + 4  # a new DICOMDIR, the same records
    assert kept._head_bytes == sum(len(value) for value in kept._heads.values()) <= budget