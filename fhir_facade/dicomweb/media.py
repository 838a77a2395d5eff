"""A study or series as one ZIP laid out as DICOM media (issue 15: "the CD as a file").

Offered on WADO-RS study and series retrieval for ``Accept: application/zip`` (the proxy asks
:func:`wants_zip` before its DICOM negotiation). The ZIP holds each instance as the PACS stores it
(WADO-RS with ``transfer-syntax=*``, byte for byte) under a PS3.10 File ID of 8-character upper
case components (``PT000000/ST000000/SE000000/IM000000``, PS3.10 Section 8.2 and 8.5), and a
``DICOMDIR`` (PS3.10 Section 7.2, Basic Directory IOD of PS3.3 Annex F) at the root, written by
pydicom's :class:`~pydicom.fileset.FileSet` from the headers of the very files in the ZIP.

Memory is bounded: the instances are fetched and zipped one at a time (stream-zip, without
compression: DICOM pixel data hardly shrinks and deflating would halve throughput), so the
facade holds at most one instance and the headers of the others. The ``DICOMDIR`` is therefore
the last member: a ZIP's central directory lets readers find it wherever it is, and only
headers that were really sent are listed. The File IDs are those the FileSet assigns as each
instance is added (appended in order, they do not change), checked again when it is written.

A failure of the PACS after the answer started can only break the stream off: the client then
holds a truncated ZIP, which every unzip tool reports (no central directory).
"""
from __future__ import annotations

import datetime
import io
import os
import tempfile
import time
from collections.abc import Iterator

import pydicom
from flask import Response, stream_with_context
from pydicom.fileset import FileSet
from stream_zip import NO_COMPRESSION_64, stream_zip

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.pacs.client import PacsError, get_pacs


ZIP = "application/zip"
#: Each instance as stored (PS3.18 Section 8.7.3.5.2: ``transfer-syntax=*``).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Permissions of the ZIP's members (read-only files).
MEMBER_MODE = 0o100444


class MediaError(PacsError):
    """The PACS answered an instance the ZIP cannot hold (not one DICOM part)."""


def wants_zip(accept: str | None) -> bool:
    """Whether the Accept header (or ``?accept=``) names ``application/zip`` with a non-zero q.

    Only an explicit ``application/zip`` chooses the ZIP: ``*/*`` keeps the DICOM answer.
    """
    for media_range in (accept or "").split(","):
        kind, *params = [p.strip() for p in media_range.split(";")]
        if kind.lower() != ZIP:
            continue
        q = next((p.split("=", 1)[1] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def instances(study_uid: str, series_uid: str | None = None) -> list[tuple[str, str]]:
    """(SeriesInstanceUID, SOPInstanceUID) of every instance of the study (or one series), by
    series in the PACS's order, then InstanceNumber.

    Raises
    ------
    PacsError
    """
    path = f"studies/{study_uid}" + (f"/series/{series_uid}" if series_uid else "") + "/instances"
    rows = get_pacs().qido(path, [("includefield", "00200013"), ("includefield", "0020000E")])
    order: dict[str, int] = {}
    found = []
    for row in rows:
        series, sop = dj.text(row, "SeriesInstanceUID"), dj.text(row, "SOPInstanceUID")
        if not series or not sop:
            continue
        order.setdefault(series, len(order))
        number = (row.get("00200013") or {}).get("Value") or [0]
        found.append((order[series], number[0] if isinstance(number[0], int) else 0, sop, series))
    return [(series, sop) for _, _, sop, series in sorted(found)]


def single_part(response) -> bytes:
    """The one part of a multipart/related answer holding one instance.

    Raises
    ------
    MediaError
        No boundary, or no part.
    """
    content_type = response.headers.get("Content-Type", "")
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                     if p.strip().lower().startswith("boundary=")), None)
    body = response.content
    if not boundary:
        raise MediaError("the PACS answered an instance without a multipart boundary")
    delimiter = b"--" + boundary.encode()
    start = body.find(delimiter)
    head_end = body.find(b"\r\n\r\n", start)
    end = body.rfind(b"\r\n" + delimiter)
    if start < 0 or head_end < 0 or end <= head_end:
        raise MediaError("the PACS answered an instance that is not one multipart part")
    return body[head_end + 4:end]


def fetch(study_uid: str, series_uid: str, sop_uid: str) -> bytes:
    """One instance as the PACS stores it (PS3.10 file bytes).

    Raises
    ------
    PacsError
        The PACS failed, or answered anything but 200 with one part.
    """
    path = f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    response = get_pacs().get(path, headers={"Accept": AS_STORED})
    if response.status_code != 200:
        raise MediaError(f"the PACS answered {response.status_code} for an instance", upstream_status=response.status_code)
    return single_part(response)


def dicomdir(file_set: FileSet, expected: list[str]) -> bytes:
    """The ``DICOMDIR`` of *file_set*, checked to name the instances as *expected* (File IDs)."""
    if [instance.FileID for instance in file_set] != expected:
        raise MediaError("the DICOMDIR's File IDs changed while zipping")
    with tempfile.TemporaryDirectory(prefix="facade-dicomdir-") as folder:
        file_set.write(folder)
        with open(os.path.join(folder, "DICOMDIR"), "rb") as out:
            return out.read()


def members(study_uid: str, listed: list[tuple[str, str]]) -> Iterator[tuple]:
    """stream-zip members: each instance under its File ID, then the ``DICOMDIR``."""
    file_set = FileSet()
    file_set.ID = "FACADE"
    names: list[str] = []
    modified_at = datetime.datetime(*time.gmtime()[:6])
    for series_uid, sop_uid in listed:
        data = fetch(study_uid, series_uid, sop_uid)
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            name = file_set.add(header).FileID.replace(os.sep, "/")
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise MediaError(f"an instance of the study is not a DICOM file pydicom can read: {exc}") from exc
        names.append(name.replace("/", os.sep))
        yield name, modified_at, MEMBER_MODE, NO_COMPRESSION_64, (data,)
        del data, header
    yield "DICOMDIR", modified_at, MEMBER_MODE, NO_COMPRESSION_64, (dicomdir(file_set, names),)


def zip_response(study_uid: str, series_uid: str | None = None) -> Response:
    """The study (or series) as a streaming DICOM-media ZIP (``application/zip``).

    The instance list is asked before the answer starts (a PACS failure then is a proper error);
    authorization is the caller's (the proxy's ``authorize_study``).

    Raises
    ------
    PacsError
        The PACS failed before the answer started.
    """
    listed = instances(study_uid, series_uid)
    body = stream_with_context(stream_zip(members(study_uid, listed), chunk_size=256 * 1024))
    response = Response(body, mimetype=ZIP)
    response.headers["Content-Disposition"] = f'attachment; filename="study-{study_uid}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response
