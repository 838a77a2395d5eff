"""Review: DICOM-media ZIPs of studies with odd shapes, from a real Orthanc (issue 15).

Every member must be byte-identical to what was stored and the DICOMDIR must be read by
pydicom's FileSet, listing each instance under the member that holds it: for a study of one
instance; of instances of very different sizes (one past the reused-buffer limit); of several
series; of two patients; with Implicit VR, Big Endian and Deflated files; as a series; downloaded
twice; and after an instance was replaced (same SOP Instance UID and length) or one added.
"""
from __future__ import annotations

import hashlib
import io
import zipfile

import pydicom
import pytest
import requests
from pydicom.fileset import FileSet
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

import devpacs
import samples
from facade_helpers import bearer, make_app, token

PATIENT = "ZIP-SHAPES"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(orthanc, ds) -> tuple[str, bytes]:
    data = devpacs.to_part10(ds)
    assert devpacs.store_file(orthanc.url, data) is not None
    return str(ds.SOPInstanceUID), data


@pytest.fixture(scope="module")
def app(orthanc, tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("zip-shapes"), FACADE_PACS_URL=orthanc.dicomweb_url)


def download(app, path: str, patient: str = PATIENT, scope: str = "patient/ImagingStudy.rs") -> zipfile.ZipFile:
    answer = app.test_client().get(f"/dicomweb/{path}",
                                   headers={**bearer(token(app, scope=scope, patient=patient)),
                                            "Accept": "application/zip"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return zipfile.ZipFile(io.BytesIO(answer.data))


def media(archive: zipfile.ZipFile, tmp_path) -> dict[str, str]:
    """SOP Instance UID -> sha256 of its member, each member found through the DICOMDIR."""
    assert archive.testzip() is None  # every member's CRC-32
    names = archive.namelist()
    assert names[-1] == "DICOMDIR" and len(set(names)) == len(names)
    folder = tmp_path / f"unzipped-{len(list(tmp_path.iterdir()))}"
    archive.extractall(folder)
    file_set = FileSet(pydicom.dcmread(folder / "DICOMDIR"))
    found = {}
    for instance in file_set:
        member = instance.FileID.replace("\\", "/")
        data = archive.read(member)
        assert pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID == instance.SOPInstanceUID
        found[instance.SOPInstanceUID] = sha(data)
    assert sorted(names[:-1]) == sorted(i.FileID.replace("\\", "/") for i in file_set)
    return found


def test_one_instance(orthanc, app, tmp_path):
    uid, data = store(orthanc, samples.make_instance(PatientID=PATIENT, Modality="OT"))
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    assert media(download(app, f"studies/{study}"), tmp_path) == {uid: sha(data)}


def test_sizes_series_syntaxes_and_a_series_retrieval(orthanc, app, tmp_path):
    study = pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid() for _ in range(3)]
    stored, by_series = {}, {s: {} for s in series}
    shapes = [  # (series, rows, columns, transfer syntax): 0.2 kB to 9.4 MiB, in an order that mixes them
        (0, 2, 2, None), (0, 2048, 2400, None), (1, 512, 512, ImplicitVRLittleEndian), (0, 8, 8, None),
        (1, 1024, 2048, ExplicitVRBigEndian), (2, 256, 256, DeflatedExplicitVRLittleEndian),
        (0, 2048, 2048, None), (2, 16, 16, ImplicitVRLittleEndian), (1, 360, 364, None),
    ]
    for n, (s, rows, columns, syntax) in enumerate(shapes, 1):
        extra = {"transfer_syntax": syntax} if syntax else {}
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series[s],
                                   InstanceNumber=n, Rows=rows, Columns=columns, Modality="OT", **extra)
        uid, data = store(orthanc, ds)
        stored[uid] = by_series[series[s]][uid] = sha(data)
    assert media(download(app, f"studies/{study}"), tmp_path) == stored
    assert media(download(app, f"studies/{study}/series/{series[1]}"), tmp_path) == by_series[series[1]]


def test_a_study_of_two_patients_is_no_zip_for_either_patients_token(orthanc, app):
    study = pydicom.uid.generate_uid()
    for patient in ("ZIP-TWO-A", "ZIP-TWO-B"):
        store(orthanc, samples.make_instance(PatientID=patient, StudyInstanceUID=study, Modality="OT"))
    for patient in ("ZIP-TWO-A", "ZIP-TWO-B"):
        answer = app.test_client().get(f"/dicomweb/studies/{study}", headers={
            **bearer(token(app, patient=patient)), "Accept": "application/zip"})
        assert answer.status_code == 403
        assert answer.headers["Content-Type"] != "application/zip"


def test_a_series_the_study_does_not_have_is_not_found_as_zip_as_in_multipart(orthanc, app):
    uid, data = store(orthanc, samples.make_instance(PatientID=PATIENT, Modality="OT"))
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    path = f"/dicomweb/studies/{study}/series/{pydicom.uid.generate_uid()}"
    for accept in ("multipart/related; type=application/dicom; transfer-syntax=*", "application/zip"):
        answer = app.test_client().get(path, headers={**bearer(token(app, patient=PATIENT)), "Accept": accept})
        assert (answer.status_code, answer.headers["Content-Type"]) == (404, "application/json"), accept


def test_the_same_study_twice_then_with_an_instance_replaced_and_one_added(orthanc, app, tmp_path):
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored, datasets = {}, []
    for n in range(1, 4):
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=n, Modality="OT", SeriesDescription="BEFORE",
                                   Rows=600, Columns=600)
        uid, data = store(orthanc, ds)
        stored[uid] = sha(data)
        datasets.append(ds)
    first = download(app, f"studies/{study}")
    assert media(first, tmp_path) == stored
    again = download(app, f"studies/{study}")
    assert media(again, tmp_path) == stored
    assert again.read("DICOMDIR") == first.read("DICOMDIR")
    # Replace instance 2 by one of the same SOP Instance UID and length, another series description.
    replaced = datasets[1]
    replaced.SeriesDescription = "AFTER!"
    replaced.InstanceNumber = 7
    root = devpacs.rest_root(orthanc.url)
    found = requests.post(f"{root}/tools/lookup", data=str(replaced.SOPInstanceUID), timeout=30).json()
    assert requests.delete(f"{root}/instances/{found[0]['ID']}", timeout=30).ok
    uid, data = store(orthanc, replaced)
    assert len(data) == len(devpacs.to_part10(datasets[0]))
    stored[uid] = sha(data)
    archive = download(app, f"studies/{study}")
    assert media(archive, tmp_path) == stored
    extracted = tmp_path / "replaced"
    archive.extractall(extracted)
    records = {r.ReferencedSOPInstanceUIDInFile: r for r in pydicom.dcmread(extracted / "DICOMDIR")
               .DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"}
    assert int(records[uid].InstanceNumber) == 7
    added, data = store(orthanc, samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study,
                                                       SeriesInstanceUID=series, InstanceNumber=4, Modality="OT"))
    stored[added] = sha(data)
    assert media(download(app, f"studies/{study}"), tmp_path) == stored


def test_instances_about_a_block_long_take_turns_in_the_reused_buffers(orthanc, app, tmp_path):
    """Ten instances just under, at and over media.BLOCK (256 KiB) and a few MiB, so that each of
    the three reused buffers is filled again several times while blocks may still refer to it."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored = {}
    for n, (rows, columns) in enumerate([(362, 362), (256, 512), (363, 362), (1024, 1024), (10, 10), (370, 370),
                                         (362, 362), (1448, 1448), (256, 511), (400, 400)], 1):
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=n, Rows=rows, Columns=columns, Modality="OT")
        uid, data = store(orthanc, ds)
        stored[uid] = sha(data)
    assert media(download(app, f"studies/{study}"), tmp_path) == stored
    assert media(download(app, f"studies/{study}"), tmp_path) == stored
