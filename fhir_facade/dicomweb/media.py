"""A study or series as one ZIP laid out as DICOM media (issue 15: "the CD as a file").

Offered on WADO-RS study and series retrieval for ``Accept: application/zip`` (the proxy asks
:func:`wants_zip` before its DICOM negotiation). The ZIP holds each instance as the PACS stores it
(WADO-RS with ``transfer-syntax=*``, byte for byte) under a PS3.10 File ID of 8-character upper
case components (``PT000000/ST000000/SE000000/IM000000``, PS3.10 Section 8.2 and 8.5), and a
``DICOMDIR`` (PS3.10 Section 7.2, Basic Directory IOD of PS3.3 Annex F) at the root, written from
the headers of the very files in the ZIP with the records pydicom's FileSet would make
(:class:`fhir_facade.dicom.dicomdir.Dicomdir`, in one pass; FileSet itself is quadratic).

Memory is bounded: the study comes from the PACS as one WADO-RS retrieval, parsed as it streams
(:func:`fhir_facade.dicomweb.multipart.each_part`), and each instance is zipped as it arrives
(stream-zip, without compression: DICOM pixel data hardly shrinks and deflating would halve
throughput), so the facade holds one instance and the headers of the others. The ``DICOMDIR`` is
therefore the last member: a ZIP's central directory lets readers find it wherever it is, and
only headers that were really sent are listed. The File IDs are given as the instances arrive,
by FileSet's own rule (:class:`Names`), and the DICOMDIR references exactly those; a DICOMDIR is
kept per app for the same instances, so downloading a study again costs no DICOMDIR at all.

A failure of the PACS after the answer started can only break the stream off: the client then
holds a truncated ZIP, which every unzip tool reports (no central directory).
"""
from __future__ import annotations

import datetime
import io
import os
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator

import pydicom
from flask import Response, current_app, stream_with_context
from pydicom.fileset import FileSet
from stream_zip import NO_COMPRESSION_64, stream_zip

from fhir_facade.dicom.dicomdir import Dicomdir, UnsupportedInstance
from fhir_facade.dicomweb import multipart
from fhir_facade.dicomweb.negotiation import media_ranges, parse_media_type
from fhir_facade.pacs.client import READ_ERRORS, PacsError, broken_answer, get_pacs


ZIP = "application/zip"
#: Each instance as stored (PS3.18 Section 8.7.3.5.2: ``transfer-syntax=*``).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Permissions of the ZIP's members (read-only files).
MEMBER_MODE = 0o100444
#: Bytes read from the PACS at a time.
CHUNK = 256 * 1024
#: Bytes written to the client at a time. stream-zip cuts its output into blocks of this size,
#: slicing (copying) a member that straddles two; blocks of several instances leave most whole.
BLOCK = 1024 * 1024
#: DICOMDIRs kept per app (:func:`dicomdir`); one of 300 instances is about 80 kB.
DICOMDIR_CACHE_SIZE = 64


class MediaError(PacsError):
    """The PACS answered an instance the ZIP cannot hold (not one DICOM part)."""


def wants_zip(accept: str | None) -> bool:
    """Whether the Accept header (or ``?accept=``) names ``application/zip`` with a non-zero q.

    Only an explicit ``application/zip`` chooses the ZIP: ``*/*`` keeps the DICOM answer.
    """
    return any(media == ZIP for media, _params, _q in media_ranges(accept))


def stored_instances(study_uid: str, series_uid: str | None = None):
    """The study's (or series') instances as the PACS stores them, one at a time, from one WADO-RS
    retrieval (``transfer-syntax=*``) parsed as it streams.

    Returns
    -------
    iterator of bytes
        PS3.10 files. The PACS was asked before this returns, so a refusal is an exception here.

    Raises
    ------
    PacsError
        The PACS failed, or did not answer 200 with a multipart body.
    """
    path = f"studies/{study_uid}" + (f"/series/{series_uid}" if series_uid else "")
    response = get_pacs().get(path, headers={"Accept": AS_STORED, "Accept-Encoding": "identity"}, stream=True)
    boundary = parse_media_type(response.headers.get("Content-Type", ""))[1].get("boundary")
    if response.status_code != 200 or not boundary:
        status = response.status_code
        response.close()
        raise MediaError(f"the PACS answered {status} without the instances", upstream_status=status)

    def read(size: int) -> bytes:
        # As sent (identity: the PACS was asked not to compress), so that a part with a Content-Length is
        # read by count in one piece: no search for the delimiter, no joining of chunks.
        try:
            return response.raw.read(size, decode_content=False)
        except READ_ERRORS as exc:
            raise broken_answer(response, exc) from exc

    def parts():
        try:
            yield from multipart.each_part(read, boundary)
        finally:
            response.close()
    return parts()



class Names:
    """PS3.10 File IDs as pydicom's FileSet assigns them (PS3.10 Section 8.2: components of at
    most 8 upper case characters): ``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``, each number the
    record's place among its siblings in the order they first appear."""

    def __init__(self) -> None:
        self.children: dict[tuple, dict[str, int]] = {}

    def _index(self, parent: tuple, key: str) -> int:
        siblings = self.children.setdefault(parent, {})
        return siblings.setdefault(key, len(siblings))

    def file_id(self, header) -> str:
        """The File ID of an instance (its header: PatientID, the UIDs)."""
        keys = (str(header.get("PatientID", "")), str(header.StudyInstanceUID), str(header.SeriesInstanceUID),
                str(header.SOPInstanceUID))
        parts, parent = [], ()
        for prefix, key in zip(("PT", "ST", "SE", "IM"), keys):
            parts.append(f"{prefix}{self._index(parent, key):06d}")
            parent = parent + (key,)
        return "/".join(parts)


def _directory_cache() -> OrderedDict:
    return current_app.extensions.setdefault("facade_dicomdirs", OrderedDict())


def dicomdir(heads: list[bytes], names: list[str], key: tuple) -> bytes:
    """The ``DICOMDIR`` of instances whose files begin with *heads* (up to Pixel Data), named
    *names*: written in one pass (:class:`~fhir_facade.dicom.dicomdir.Dicomdir`, about 0.25 s of
    CPU for 300 instances), or by pydicom's FileSet (quadratic, about 5 s for 300) when an
    instance needs a single-level record.

    The result is kept per app under *key* (every File ID, SOP Instance UID, length and CRC of
    the header bytes): the same study downloaded again gets it at once, a changed one a new one.

    Raises
    ------
    MediaError
        An instance cannot be listed, or the FileSet named one otherwise than *names*.
    """
    cache = _directory_cache()
    found = cache.get(key)
    if found is not None:
        cache.move_to_end(key)
        return found
    headers = [pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True) for head in heads]
    directory = Dicomdir("FACADE")
    try:
        for header, name in zip(headers, names):
            directory.add(header, name)
        data = directory.encode()
    except UnsupportedInstance:
        data = file_set_dicomdir(headers, names)
    except ValueError as exc:  # pydicom's recorders: an element a record requires is missing
        raise MediaError(f"an instance of the study cannot be listed in a DICOMDIR: {exc}") from exc
    cache[key] = data
    while len(cache) > DICOMDIR_CACHE_SIZE:
        cache.popitem(last=False)
    return data


def file_set_dicomdir(headers: list, names: list[str]) -> bytes:
    """The ``DICOMDIR`` of instances (their *headers*) named *names*, written by pydicom's
    FileSet: for instances with single-level records, which
    :class:`~fhir_facade.dicom.dicomdir.Dicomdir` leaves to it. FileSet costs time quadratic in
    the instances (about 5 s for 300).

    Raises
    ------
    MediaError
        The FileSet named an instance otherwise than *names* (never seen; the ZIP would be wrong).
    """
    file_set = FileSet()
    file_set.ID = "FACADE"
    for header in headers:
        file_set.add(header)
    if [instance.FileID.replace(os.sep, "/") for instance in file_set] != names:
        raise MediaError("the DICOMDIR's File IDs are not the ZIP's")
    with tempfile.TemporaryDirectory(prefix="facade-dicomdir-") as folder:
        file_set.write(folder)
        with open(os.path.join(folder, "DICOMDIR"), "rb") as out:
            return out.read()


def members(parts: Iterator[bytes]) -> Iterator[tuple]:
    """stream-zip members: each instance under its File ID as it arrives, then the ``DICOMDIR``.

    Each instance is one chunk (stream-zip's cost is per chunk). Of each instance only its
    header bytes (up to Pixel Data) are kept, for the DICOMDIR (:func:`dicomdir`).

    Raises
    ------
    MediaError
        An instance pydicom cannot read or list (the stream then breaks off).
    """
    names, heads, key = Names(), [], []
    listed: list[str] = []
    modified_at = datetime.datetime(*time.gmtime()[:6])
    for data in parts:
        source = io.BytesIO(data)
        try:
            header = pydicom.dcmread(source, stop_before_pixels=True)
            name = names.file_id(header)
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise MediaError(f"an instance of the study is not a DICOM file pydicom can read: {exc}") from exc
        head = data[:source.tell()]
        key.append((name, str(header.SOPInstanceUID), len(data), zlib.crc32(head)))
        heads.append(head)
        listed.append(name)
        del header, source  # a FileDataset read from a buffer keeps the buffer
        yield name, modified_at, MEMBER_MODE, NO_COMPRESSION_64, (data,)
        del data
    yield "DICOMDIR", modified_at, MEMBER_MODE, NO_COMPRESSION_64, (dicomdir(heads, listed, tuple(key)),)


def zip_response(study_uid: str, series_uid: str | None = None) -> Response:
    """The study (or series) as a streaming DICOM-media ZIP (``application/zip``).

    The PACS is asked before the answer starts (a refusal then is a proper error); authorization
    is the caller's (the proxy's ``authorize_study``).

    Raises
    ------
    PacsError
        The PACS failed before the answer started.
    """
    parts = stored_instances(study_uid, series_uid)
    body = stream_with_context(stream_zip(members(parts), chunk_size=BLOCK))
    response = Response(body, mimetype=ZIP)
    response.headers["Content-Disposition"] = f'attachment; filename="study-{study_uid}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response
