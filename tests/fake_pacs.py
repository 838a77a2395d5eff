"""A fake DICOMweb PACS for the `responses` library in which every UID asked about exists.

Any study, series or instance UID a request names is answered as one study of patient
:data:`PATIENT_ID` with one series, one instance and :data:`FRAMES` frames, so generated requests
(schemathesis) reach past the facade's look-ups to the relay. Answers follow PS3.18: QIDO-RS
and metadata are DICOM JSON (Annex F), retrievals are multipart/related (Section 8.7.3.5),
rendered resources are JPEG; like Orthanc 1.10 it has no thumbnail resource (404).
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlsplit

import responses

PATIENT_ID = "DEMO-0001"  # the demo patient, the Patient read example of openapi.yaml
FRAMES = 3
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DEFAULT_STUDY, DEFAULT_SERIES, DEFAULT_SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
BOUNDARY = "fake-pacs-boundary"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"

LEVELS = ("studies", "series", "instances")


def _element(vr: str, *values) -> dict:
    return {"vr": vr, "Value": list(values)}


def dataset(study: str, series: str, sop: str) -> dict:
    """One instance's DICOM JSON with its patient, study and series modules (UTF-8 text)."""
    return {
        "00080005": _element("CS", "ISO_IR 192"),
        "00080016": _element("UI", CT_IMAGE_STORAGE),
        "00080018": _element("UI", sop),
        "00080020": _element("DA", "20240102"),
        "00080030": _element("TM", "101500"),
        "00080060": _element("CS", "CT"),
        "00080061": _element("CS", "CT"),
        "00081030": _element("LO", "Fake study"),
        "0008103E": _element("LO", "Fake series"),
        "00100010": _element("PN", {"Alphabetic": "Doe^Jane"}),
        "00100020": _element("LO", PATIENT_ID),
        "00100030": _element("DA", "19700101"),
        "00100040": _element("CS", "F"),
        "0020000D": _element("UI", study),
        "0020000E": _element("UI", series),
        "00200011": _element("IS", 1),
        "00200013": _element("IS", 1),
        "00201206": _element("IS", 1),
        "00201208": _element("IS", 1),
        "00201209": _element("IS", 1),
        "00280008": _element("IS", FRAMES),
        "00280010": _element("US", 8),
        "00280011": _element("US", 8),
        "00280100": _element("US", 8),
    }


def _multipart(part_type: str, body: bytes) -> tuple[dict, bytes]:
    headers = {"Content-Type": f'multipart/related; type="{part_type}"; boundary={BOUNDARY}'}
    payload = (f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + body
               + f"\r\n--{BOUNDARY}--\r\n".encode())
    return headers, payload


def split(path: str) -> tuple[dict, list[str]]:
    """The UIDs a path names by level (``{"studies": uid, ...}``) and the segments after them."""
    segments = path.strip("/").split("/")
    uids: dict[str, str] = {}
    while len(segments) >= 2 and segments[0] in LEVELS:
        uids[segments[0]] = segments[1]
        segments = segments[2:]
    return uids, segments


def part10(study: str, series: str, sop: str) -> bytes:
    """A small DICOM file (PS3.10) of the instance, in Explicit VR Little Endian, without pixels:
    what a PACS sends for it, which the facade relays without transcoding."""
    import io

    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, PATIENT_ID
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def answer(path: str, query: dict) -> tuple[int, dict, bytes]:
    """Status, headers and body for a GET of *path* (below the DICOMweb base) with *query*."""
    uids, rest = split(path)
    study = uids.get("studies") or query.get("StudyInstanceUID") or DEFAULT_STUDY
    series = uids.get("series") or query.get("SeriesInstanceUID") or DEFAULT_SERIES
    sop = uids.get("instances") or query.get("SOPInstanceUID") or DEFAULT_SOP
    if rest and rest[-1] == "thumbnail":
        return 404, {}, b""
    if rest and rest[-1] == "rendered":
        return 200, {"Content-Type": "image/jpeg"}, JPEG
    if rest and rest[0] in ("frames", "bulk", "bulkdata"):
        return (200, *_multipart("application/octet-stream", bytes(64)))
    if rest in (["metadata"], ["studies"], ["series"], ["instances"]):
        body = json.dumps([dataset(study, series, sop)]).encode()
        return 200, {"Content-Type": "application/dicom+json"}, body
    if not rest:
        return (200, *_multipart("application/dicom", part10(study, series, sop)))
    return 404, {}, b""


def install(mock: responses.RequestsMock, base: str) -> None:
    """Answer every GET below *base* (a DICOMweb base URL) on *mock* with :func:`answer`."""

    def callback(request):
        url = urlsplit(request.url)
        path = url.path[len(urlsplit(base).path):]
        return answer(path, dict(parse_qsl(url.query)))

    mock.add_callback(responses.GET, re.compile(re.escape(base) + r"(/.*)?(\?.*)?$"), callback=callback)
