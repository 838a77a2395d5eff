"""``flask import-media`` (issue 15) into a real Orthanc: a CD made by pydicom's FileSet with two
patients' series, one damaged file, one non-DICOM file and one instance the PACS already holds;
counts, the reconciled PatientID (the CD's kept in Other Patient IDs Sequence), nothing of a
refused file stored, and the study then found through FHIR under the local id."""
from __future__ import annotations

import io
import shutil
import zipfile

import pydicom
import pytest
import requests
from pydicom.fileset import FileSet

import devpacs
import samples
from facade_helpers import bearer, make_app, token

PUBLIC = "https://facade.example/base"


def build_cd(folder, tag: str):
    """A CD in *folder*: patients CD-A (2 series x 2) and CD-B (1 series x 2); returns their datasets."""
    file_set = FileSet()
    made = []
    for patient, series_count in ((f"{tag}-A", 2), (f"{tag}-B", 1)):
        study = pydicom.uid.generate_uid()
        for _ in range(series_count):
            series = pydicom.uid.generate_uid()
            for n in (1, 2):
                ds = samples.make_instance(PatientID=patient, IssuerOfPatientID="OTHER-HOSPITAL",
                                           StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n,
                                           Modality="OT")
                ds = pydicom.dcmread(io.BytesIO(devpacs.to_part10(ds)))
                file_set.add(ds)
                made.append(ds)
    file_set.write(folder)
    return made, FileSet(pydicom.dcmread(folder / "DICOMDIR"))


def orthanc_instance(orthanc, sop_uid: str) -> pydicom.Dataset | None:
    found = requests.post(f"{orthanc.url}/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}},
                          timeout=10).json()
    if not found:
        return None
    data = requests.get(f"{orthanc.url}/instances/{found[0]}/file", timeout=10).content
    return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture
def cd(orthanc, tmp_path):
    media = tmp_path / "cd"
    media.mkdir()
    made, file_set = build_cd(media, tmp_path.name[-12:].upper().replace("_", "")[:8] or "CD")
    ids = {inst.SOPInstanceUID: inst.FileID for inst in file_set}
    damaged, garbage, duplicate = made[1], made[2], made[5]
    path = media / ids[damaged.SOPInstanceUID]
    path.write_bytes(path.read_bytes()[:-200])  # pixel data cut short
    (media / ids[garbage.SOPInstanceUID]).write_bytes(b"this is not a DICOM file at all" * 10)
    devpacs.store_file(orthanc.url, devpacs.to_part10(duplicate))  # already in the PACS
    (tmp_path / "db").mkdir()
    app = make_app(tmp_path / "db", FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC)
    return {"app": app, "media": media, "made": made, "ids": ids, "damaged": damaged, "garbage": garbage,
            "duplicate": duplicate, "local": f"LOCAL-{tmp_path.name[-6:]}"}


def run(cd, *args):
    from fhir_facade.cli import import_media_command
    return cd["app"].test_cli_runner().invoke(import_media_command, [str(a) for a in args])


def test_import_a_cd_with_reconciliation(cd, orthanc):
    result = run(cd, cd["media"], "--patient-id", cd["local"], "--issuer", "OUR-HOSPITAL")
    assert result.exit_code == 1, result.output
    assert "stored: 3, already present: 1, refused: 2" in result.output
    assert f"refused: {cd['ids'][cd['damaged'].SOPInstanceUID]}: " in result.output
    assert "cut short" in result.output
    assert f"refused: {cd['ids'][cd['garbage'].SOPInstanceUID]}: not a readable DICOM file" in result.output
    for refused in (cd["damaged"], cd["garbage"]):
        assert orthanc_instance(orthanc, refused.SOPInstanceUID) is None
    stored = [ds for ds in cd["made"] if ds not in (cd["damaged"], cd["garbage"], cd["duplicate"])]
    for original in stored:
        ds = orthanc_instance(orthanc, original.SOPInstanceUID)
        assert ds.PatientID == cd["local"] and ds.IssuerOfPatientID == "OUR-HOSPITAL"
        [kept] = ds.OtherPatientIDsSequence
        assert (kept.PatientID, kept.IssuerOfPatientID) == (original.PatientID, "OTHER-HOSPITAL")
        assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert orthanc_instance(orthanc, cd["duplicate"].SOPInstanceUID).PatientID == cd["duplicate"].PatientID
    # Found through FHIR under the local id: both patients' studies of this CD.
    answer = cd["app"].test_client().get(f"/fhir/ImagingStudy?patient={cd['local']}",
                                         headers=bearer(token(cd["app"], patient=cd["local"])))
    assert answer.status_code == 200
    found = {e["resource"]["identifier"][0]["value"].removeprefix("urn:oid:") for e in answer.get_json()["entry"]}
    assert found == {ds.StudyInstanceUID for ds in stored}
    again = run(cd, cd["media"], "--patient-id", cd["local"])
    assert "stored: 0, already present: 4, refused: 2" in again.output


def test_import_a_zip_strictly_stores_nothing_when_a_file_is_refused(cd, orthanc, tmp_path):
    archive = tmp_path / "cd.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", cd["media"])
    assert zipfile.is_zipfile(archive)
    result = run(cd, archive, "--patient-id", cd["local"], "--strict")
    assert result.exit_code == 1
    assert "stored: 0, already present: 0, refused: 2 (strict: nothing stored)" in result.output
    assert orthanc_instance(orthanc, cd["made"][0].SOPInstanceUID) is None


def test_media_without_a_dicomdir_is_refused_whole(cd, tmp_path):
    (cd["media"] / "DICOMDIR").unlink()
    result = run(cd, cd["media"])
    assert result.exit_code == 2 and "no DICOMDIR" in result.output
    assert run(cd, cd["media"], "--issuer", "X").exit_code == 2  # --issuer needs --patient-id
