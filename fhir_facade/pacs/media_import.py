"""Import DICOM media (a CD's folder, or a ZIP of one) into the PACS through STOW-RS (issue 15).

What is imported is what the media's ``DICOMDIR`` references (PS3.10 Section 7.2, read by
pydicom's :class:`~pydicom.fileset.FileSet`). Every referenced file is read and checked before
any is stored (:func:`examine`): one that is missing, not DICOM, damaged (pixel data shorter than
its attributes say, a missing UID) or not the instance its DICOMDIR record names is refused by
name with the reason, and nothing of it is stored. With ``strict``, one refusal stores nothing at
all. An instance the PACS already holds (same SOPInstanceUID), or one the media holds twice, is
counted as already present and not sent again.

Patient identity is reconciled as IHE Import Reconciliation Workflow (IRWF, RAD TF-1 Section 21)
does when a local id is given: PatientID becomes the local id, IssuerOfPatientID the local
issuer (or is removed), and the media's own PatientID and issuer are kept in an item of Other
Patient IDs Sequence (0010,1002). Each instance is sent alone (STOW-RS, PS3.18 Section 10.5), so
memory holds one instance at a time.
"""
from __future__ import annotations

import io
import os
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from fhir_facade.pacs.client import PacsClient, PacsError

#: Elements every instance must have to be stored and found again.
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass
class ImportReport:
    """What an import did: counts, and each refused file with its reason."""

    stored: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Candidate:
    """A file of the media that passed :func:`examine`."""

    name: str
    path: Path
    sop_instance_uid: str
    study_instance_uid: str


class MediaUnreadable(ValueError):
    """The media as a whole cannot be read (no DICOMDIR, not a ZIP, a DICOMDIR pydicom refuses)."""


def find_dicomdir(root: Path) -> Path:
    """The ``DICOMDIR`` at *root*, or one folder below (a ZIP of the CD's folder).

    Raises
    ------
    MediaUnreadable
    """
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for entry in folder.iterdir():
            if entry.name.upper() == "DICOMDIR" and entry.is_file():
                return entry
    raise MediaUnreadable(f"no DICOMDIR in {root.name or root}")


def _pixel_data_ok(ds: Dataset) -> str | None:
    """Why the Pixel Data of *ds* is damaged, or None (encapsulated data is not measured).

    pydicom stops reading quietly where a file is cut short, so a file with Image Pixel module
    attributes (PS3.3 C.7.6.3) but without some of the rest, or without Pixel Data, was cut.
    """
    image = [k for k in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
                         "BitsAllocated", "PixelData") if k in ds]
    if image and len(image) < 6:
        return "the file ends before its pixel data (cut short)"
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    frames = int(ds.get("NumberOfFrames") or 1)
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated) // 8
    if len(ds.PixelData) < expected:
        return f"pixel data holds {len(ds.PixelData)} bytes, its attributes need {expected}"
    return None


def examine(root: Path, file_set: FileSet) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Read and check every file the DICOMDIR references; nothing is sent.

    Returns
    -------
    (list of Candidate, list of (name, reason))
        The files that may be stored, and those refused.
    """
    good, refused = [], []
    for instance in file_set:
        name = instance.FileID.replace(os.sep, "/")
        path = root / instance.FileID
        try:
            ds = pydicom.dcmread(path)  # not force: a file without the DICM prefix is refused
            missing = [keyword for keyword in REQUIRED if not ds.get(keyword)]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            if ds.SOPInstanceUID != instance.ReferencedSOPInstanceUIDInFile:
                raise ValueError("not the instance its DICOMDIR record names")
            problem = _pixel_data_ok(ds)
            if problem:
                raise ValueError(problem)
        except FileNotFoundError:
            refused.append((name, "missing: the DICOMDIR references it, the media does not hold it"))
            continue
        except Exception as exc:  # pydicom raises many kinds for what is not DICOM
            refused.append((name, f"not a readable DICOM file: {exc}"))
            continue
        good.append(Candidate(name, path, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)))
    return good, refused


def reconcile(ds: Dataset, patient_id: str, issuer: str | None) -> Dataset:
    """Write the local *patient_id* (and *issuer*) into *ds*, keeping the media's in Other Patient
    IDs Sequence (IHE IRWF; PS3.3 C.7.1.1). Returns *ds*."""
    original = Dataset()
    original.PatientID = ds.get("PatientID", "")
    if ds.get("IssuerOfPatientID"):
        original.IssuerOfPatientID = ds.IssuerOfPatientID
    original.TypeOfPatientID = "TEXT"
    kept = list(ds.get("OtherPatientIDsSequence") or [])
    ds.OtherPatientIDsSequence = kept + [original]
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    elif "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    return ds


def present(pacs: PacsClient, sop_instance_uid: str) -> bool:
    """Whether the PACS holds an instance with this SOPInstanceUID (QIDO-RS)."""
    return bool(pacs.qido("instances", [("SOPInstanceUID", sop_instance_uid)]))


def stow(pacs: PacsClient, data: bytes) -> str | None:
    """Store one instance (STOW-RS, PS3.18 Section 10.5); None when stored, else the refusal.

    Raises
    ------
    PacsError
        The PACS cannot be reached.
    """
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    try:
        response = pacs.session.post(pacs.url("studies"), data=body, headers=headers, timeout=pacs.timeout)
    except Exception as exc:
        raise PacsError(f"the PACS could not be reached: {type(exc).__name__}") from exc
    if response.status_code != 200:
        return f"the PACS refused it (STOW-RS {response.status_code})"
    try:
        answer = response.json()
    except ValueError:
        return None
    if isinstance(answer, dict) and (answer.get("00081198") or {}).get("Value"):
        return "the PACS refused it (Failed SOP Sequence)"
    return None


def import_folder(pacs: PacsClient, root: Path, patient_id: str | None = None, issuer: str | None = None,
                  strict: bool = False) -> ImportReport:
    """Import the media at *root* (a folder holding a DICOMDIR) into *pacs*.

    Raises
    ------
    MediaUnreadable
        No DICOMDIR, or one pydicom cannot read.
    PacsError
        The PACS failed while storing (what was stored before stays; the report is lost).
    """
    dicomdir = find_dicomdir(root)
    try:
        file_set = FileSet(pydicom.dcmread(dicomdir))
    except Exception as exc:
        raise MediaUnreadable(f"the DICOMDIR cannot be read: {exc}") from exc
    good, refused = examine(dicomdir.parent, file_set)
    report = ImportReport(refused=refused)
    if strict and refused:
        return report
    seen = set()
    for candidate in good:
        if candidate.sop_instance_uid in seen or present(pacs, candidate.sop_instance_uid):
            report.already_present.append(candidate.name)
            continue
        seen.add(candidate.sop_instance_uid)
        ds = pydicom.dcmread(candidate.path)
        if patient_id:
            reconcile(ds, patient_id, issuer)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        problem = stow(pacs, out.getvalue())
        if problem:
            report.refused.append((candidate.name, problem))
        else:
            report.stored.append(candidate.name)
    return report


def import_media(pacs: PacsClient, path: Path, patient_id: str | None = None, issuer: str | None = None,
                 strict: bool = False) -> ImportReport:
    """Import a CD's folder, or a ZIP of one (extracted to a temporary folder first).

    Raises
    ------
    MediaUnreadable, PacsError
    """
    if path.is_dir():
        return import_folder(pacs, path, patient_id, issuer, strict)
    if not zipfile.is_zipfile(path):
        raise MediaUnreadable(f"{path.name} is neither a folder nor a ZIP")
    with tempfile.TemporaryDirectory(prefix="facade-import-") as folder, zipfile.ZipFile(path) as archive:
        archive.extractall(folder)  # member names with .. or a root are made relative by zipfile
        return import_folder(pacs, Path(folder), patient_id, issuer, strict)
