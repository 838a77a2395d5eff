"""Tests for the dev PACS tooling: scripts/devpacs.py, scripts/samples.py and the `orthanc` fixture."""
from __future__ import annotations

import hashlib
import io
import socket
from email.message import Message

import pydicom
import pytest
import requests
from pydicom.encaps import generate_frames
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    PositronEmissionTomographyImageStorage,
    RLELossless,
)

import devpacs
import samples

MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict, bytes]]:
    """Split a multipart/related body (RFC 2046 Section 5.1) into (headers, payload) pairs."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    assert boundary, f"no boundary in {content_type!r}"
    delimiter = b"\r\n--" + boundary.encode("ascii")
    sections = (b"\r\n" + body).split(delimiter)
    assert sections[-1].startswith(b"--"), "missing close delimiter"
    parts = []
    for section in sections[1:-1]:
        head, _, payload = section[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def wado_instance(orthanc, instance: dict, sop_uid: str, accept: str = MULTIPART_DICOM):
    url = (
        f"{orthanc.dicomweb_url}/studies/{instance['StudyInstanceUID']}"
        f"/series/{instance['SeriesInstanceUID']}/instances/{sop_uid}"
    )
    return requests.get(url, headers={"Accept": accept}, timeout=30)


def instance_from(orthanc, source: str) -> tuple[str, dict]:
    """(SOPInstanceUID, record) of the sample file *source* in the loaded summary."""
    for uid, record in orthanc.samples["instances"].items():
        if record["source"] == source:
            return uid, record
    raise AssertionError(f"{source} was not stored")


# -- unit: no Orthanc -------------------------------------------------------


def test_find_plugin_returns_the_dicomweb_library():
    path = devpacs.find_plugin()
    assert "libOrthancDicomWeb.so" in path
    with open(path, "rb") as library:
        assert library.read(4) == b"\x7fELF"


def test_free_port_can_be_bound_on_loopback():
    port = devpacs.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_config_is_loopback_only_without_authentication(tmp_path):
    pacs = devpacs.Orthanc(tmp_path, http_port=18042, dicom_port=14242)
    config = pacs.config()
    assert config["HttpPort"] == 18042
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is False
    assert config["DicomServerEnabled"] is False
    assert config["StorageDirectory"] == str(tmp_path / "storage")
    assert config["IndexDirectory"] == str(tmp_path / "index")
    assert config["Plugins"] == [devpacs.find_plugin()]
    assert config["DicomWeb"]["Enable"] is True
    assert config["DicomWeb"]["Root"] == "/dicom-web/"
    assert pacs.url == "http://127.0.0.1:18042"
    assert pacs.dicomweb_url == "http://127.0.0.1:18042/dicom-web"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8042", "http://127.0.0.1:8042/", "http://127.0.0.1:8042/dicom-web/"],
)
def test_rest_root_accepts_the_dicomweb_base(url):
    assert devpacs.rest_root(url) == "http://127.0.0.1:8042"


def test_make_instance_writes_part10_with_file_meta():
    ds = samples.make_instance(PatientID="P-1", Modality="CT", SOPClassUID=CTImageStorage)
    data = devpacs.to_part10(ds)
    assert data[:128] == b"\0" * 128
    assert data[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert back.PatientID == "P-1"
    assert (back.Rows, back.Columns, back.BitsAllocated) == (8, 8, 16)
    assert len(back.PixelData) == 8 * 8 * 2


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
)
def test_make_instance_native_multiframe(transfer_syntax):
    ds = samples.make_instance(transfer_syntax=transfer_syntax, NumberOfFrames=3, Rows=4, Columns=5)
    back = pydicom.dcmread(io.BytesIO(devpacs.to_part10(ds)))
    assert back.file_meta.TransferSyntaxUID == transfer_syntax
    assert back.NumberOfFrames == 3
    assert len(back.PixelData) == 3 * 4 * 5 * 2


def test_make_instance_rle_has_one_fragment_per_frame():
    ds = samples.make_instance(transfer_syntax=RLELossless, NumberOfFrames=2)
    back = pydicom.dcmread(io.BytesIO(devpacs.to_part10(ds)))
    assert back.file_meta.TransferSyntaxUID == RLELossless
    assert len(list(generate_frames(back.PixelData, number_of_frames=2))) == 2


def test_make_instance_encapsulates_given_compressed_frames():
    frames = [b"\xff\xd8fake-jpeg-01\xff\xd9", b"\xff\xd8fake-jpeg-02\xff\xd9"]  # even lengths
    ds = samples.make_instance(
        transfer_syntax=JPEGBaseline8Bit, frames=frames, NumberOfFrames=2, BitsAllocated=8,
        BitsStored=8, HighBit=7,
    )
    back = pydicom.dcmread(io.BytesIO(devpacs.to_part10(ds)))
    assert list(generate_frames(back.PixelData, number_of_frames=2)) == frames


def test_make_instance_none_removes_an_attribute():
    ds = samples.make_instance(PatientID=None, pixels=False)
    assert "PatientID" not in ds
    assert "PixelData" not in ds


def test_make_instance_rejects_unknown_keywords_and_unencodable_syntaxes():
    with pytest.raises(ValueError, match="PatientIdentifier"):
        samples.make_instance(PatientIdentifier="x")
    with pytest.raises(ValueError, match="frames"):
        samples.make_instance(transfer_syntax=JPEGBaseline8Bit)


def test_demo_study_is_deterministic_with_ct_and_pt_series():
    first = samples.build_demo_study()
    second = samples.build_demo_study()
    assert [devpacs.to_part10(ds) for ds in first] == [devpacs.to_part10(ds) for ds in second]
    assert [(ds.Modality, ds.SeriesNumber, ds.InstanceNumber) for ds in first] == [
        ("CT", 1, 1), ("CT", 1, 2), ("CT", 1, 3), ("CT", 1, 4), ("CT", 1, 5),
        ("PT", 2, 1), ("PT", 2, 2), ("PT", 2, 3),
    ]
    assert {ds.StudyInstanceUID for ds in first} == {samples.demo_uid("study")}
    assert len({ds.SeriesInstanceUID for ds in first}) == 2
    assert len({ds.SOPInstanceUID for ds in first}) == 8
    assert {ds.SOPClassUID for ds in first} == {CTImageStorage, PositronEmissionTomographyImageStorage}
    ct = first[0]
    assert (ct.PatientID, str(ct.PatientName), ct.AccessionNumber) == (
        "DEMO-0001", "Demo^Patient", "DEMOACC0001")
    assert (ct.Rows, ct.Columns, ct.BodyPartExamined) == (64, 64, "CHEST")
    assert ct.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


# -- integration: the throwaway Orthanc ----------------------------------------


def test_orthanc_answers_qido_on_loopback(orthanc):
    assert orthanc.url.startswith("http://127.0.0.1:")
    assert orthanc.dicomweb_url == orthanc.url + "/dicom-web"
    response = requests.get(orthanc.dicomweb_url + "/studies", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    study_uids = {study["0020000D"]["Value"][0] for study in response.json()}
    assert orthanc.samples["demo"]["StudyInstanceUID"] in study_uids


@pytest.mark.parametrize(
    "patient_id", ["1CT1", "4MR1", "ID1", "id11111", "SCSGERM", "H31EXAMPLE", "DEMO-0001"]
)
def test_sample_patients_are_found_by_qido(orthanc, patient_id):
    assert patient_id in orthanc.samples["patients"]
    response = requests.get(
        orthanc.dicomweb_url + "/studies", params={"PatientID": patient_id}, timeout=30
    )
    assert response.status_code == 200
    studies = response.json()
    assert studies, f"no study for PatientID {patient_id}"
    assert {study["00100020"]["Value"][0] for study in studies} == {patient_id}


def test_demo_study_has_ct_and_pt_series_with_eight_instances(orthanc):
    demo = orthanc.samples["demo"]
    study_uid = demo["StudyInstanceUID"]
    base = f"{orthanc.dicomweb_url}/studies"
    study = requests.get(
        base,
        params={
            "StudyInstanceUID": study_uid,
            "includefield": "NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances",
        },
        timeout=30,
    ).json()
    assert len(study) == 1
    assert study[0]["00100010"]["Value"][0]["Alphabetic"] == "Demo^Patient"
    assert study[0]["00080050"]["Value"] == ["DEMOACC0001"]
    assert study[0]["00201206"]["Value"] == [2]
    assert study[0]["00201208"]["Value"] == [8]

    series = requests.get(f"{base}/{study_uid}/series", timeout=30).json()
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "PT"]
    assert {s["0020000E"]["Value"][0] for s in series} == set(demo["series"].values())

    instances = requests.get(f"{base}/{study_uid}/instances", timeout=30).json()
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(demo["SOPInstanceUIDs"])
    assert len(instances) == 8


@pytest.mark.parametrize("source", ["demo/CT-1", "demo/PT-3", "test_files/CT_small.dcm"])
def test_wado_rs_instance_bytes_equal_the_stored_file(orthanc, source):
    sop_uid, record = instance_from(orthanc, source)
    response = wado_instance(orthanc, record, sop_uid)
    assert response.status_code == 200
    parts = parse_multipart(response.headers["Content-Type"], response.content)
    assert len(parts) == 1
    headers, payload = parts[0]
    assert headers["content-type"] == "application/dicom"
    assert int(headers["content-length"]) == len(payload)
    assert hashlib.sha256(payload).hexdigest() == orthanc.samples["sha256"][sop_uid]


def test_wado_rs_transcodes_unless_transfer_syntax_star(orthanc):
    # DICOMweb plugin >= 1.5: without a transfer-syntax parameter, Retrieve
    # Instance answers Explicit VR Little Endian (PS3.18 Section 8.7.3.5.2),
    # so only `transfer-syntax=*` returns the stored bytes of a JPEG file.
    sop_uid, record = instance_from(orthanc, "test_files/JPEG-lossy.dcm")
    default = wado_instance(orthanc, record, sop_uid)
    transcoded = parse_multipart(default.headers["Content-Type"], default.content)[0][1]
    assert pydicom.dcmread(io.BytesIO(transcoded)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    as_stored = wado_instance(orthanc, record, sop_uid, MULTIPART_DICOM + "; transfer-syntax=*")
    payload = parse_multipart(as_stored.headers["Content-Type"], as_stored.content)[0][1]
    assert hashlib.sha256(payload).hexdigest() == record["sha256"]


def test_refused_files_are_counted_not_raised(orthanc):
    summary = orthanc.samples
    assert summary["refused"] == len(summary["refused_files"]) > 0
    assert summary["stored"] + summary["already_stored"] + summary["refused"] == summary["files"]
    for name in ("test_files/README.txt", "test_files/no_meta.dcm", "test_files/zipMR.gz"):
        assert name in summary["refused_files"]
    assert devpacs.store_file(orthanc.url, b"not a DICOM file") is None
    part10 = devpacs.to_part10(samples.make_instance())
    assert devpacs.store_file(orthanc.url, part10[:-37]) is None  # truncated
    no_study = samples.make_instance(StudyInstanceUID=None)
    assert devpacs.post_instance(orthanc.url, devpacs.to_part10(no_study)) == "Inexistent tag"
    # Orthanc 1.10 (DCMTK) does not insist on Part-10: a bare dataset that
    # starts with a group 0008 element is stored; no_meta.dcm is refused only
    # because its first byte is a stray space.
    assert "test_files/ExplVR_LitEndNoMeta.dcm" not in summary["refused_files"]


def test_store_dataset_reports_success_then_already_stored(orthanc):
    ds = samples.make_instance(PatientID="DEVPACS-STORE-TEST", NumberOfFrames=2)
    first = devpacs.store_dataset(orthanc.url, ds)
    try:
        assert first["Status"] == "Success"
        assert devpacs.store_dataset(orthanc.dicomweb_url, ds)["Status"] == "AlreadyStored"
        found = requests.get(
            orthanc.dicomweb_url + "/instances",
            params={"SOPInstanceUID": ds.SOPInstanceUID, "includefield": "00280008"},
            timeout=30,
        ).json()
        assert [i["00280008"]["Value"] for i in found] == [[2]]
    finally:
        requests.delete(f"{orthanc.url}/patients/{first['ParentPatient']}", timeout=30)


def test_loading_samples_twice_stores_nothing_new(orthanc):
    again = samples.load_samples(orthanc.url)
    assert again["stored"] == 0
    assert again["already_stored"] == orthanc.samples["files"] - orthanc.samples["refused"]
    assert again["refused_files"] == orthanc.samples["refused_files"]
    assert again["sha256"] == orthanc.samples["sha256"]


@pytest.mark.integration
def test_start_failure_raises_with_the_log_tail(tmp_path):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pacs = devpacs.Orthanc(tmp_path, http_port=port, start_timeout=15)
        with pytest.raises(devpacs.OrthancError, match="Orthanc log") as raised:
            pacs.start()
    assert str(port) in str(raised.value)
    assert not pacs.running
