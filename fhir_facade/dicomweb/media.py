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
import itertools
import time
import types
import zlib
from collections.abc import Iterator

import stream_zip as _stream_zip
from flask import Response, request, stream_with_context
from isal.isal_zlib import crc32
from stream_zip import NO_COMPRESSION_64, stream_zip

from fhir_facade.dicom.hierarchy import hierarchy
from fhir_facade.dicomweb import multipart, zerocopy
from fhir_facade.dicomweb.media_directory import Listing, MediaError, Names, directories
from fhir_facade.dicomweb.negotiation import media_ranges, parse_media_type
from fhir_facade.pacs.client import READ_ERRORS, broken_answer, get_pacs

__all__ = ["MediaError", "Names", "ZIP", "wants_zip", "stored_instances", "members", "zip_response"]

ZIP = "application/zip"
#: Each instance as stored (PS3.18 Section 8.7.3.5.2: ``transfer-syntax=*``).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Permissions of the ZIP's members (read-only files).
MEMBER_MODE = 0o100444
#: Bytes written to the client at a time: stream-zip joins its output into blocks of this size.
BLOCK = 256 * 1024
#: Instances of BLOCK to this many bytes are read into memory reused from one to the next
#: (:class:`Places`); others into memory of their own.
REUSED_UP_TO = 8 * 1024 * 1024

#: stream-zip computes every member's CRC-32 with ``zlib.crc32``, which is CPython's system zlib
#: (1.2.13 here: 2.3 GB/s, a third of the facade's CPU for a study). ISA-L's CRC-32 (python-isal,
#: the same CRC: ISO 3309 / ITU-T V.42, as PKWARE's APPNOTE 4.4.7 asks) uses the CPU's carry-less
#: multiply, ten times as fast. stream-zip looks ``zlib`` up in its module at each call, so its
#: name there is bound to a module of zlib's own functions with ISA-L's ``crc32``; stream-zip is
#: pinned and ``tests/.../test_media_zip.py`` checks the binding and every member's CRC.
_stream_zip.zlib = types.SimpleNamespace(**{**vars(zlib), "crc32": crc32})


def wants_zip(accept: str | None) -> bool:
    """Whether the Accept header (or ``?accept=``) names ``application/zip`` with a non-zero q.

    Only an explicit ``application/zip`` chooses the ZIP: ``*/*`` keeps the DICOM answer.
    """
    return any(media == ZIP for media, _params, _q in media_ranges(accept))


class Places:
    """Memory for the instances of one ZIP, as they arrive: ``places(length)`` is a buffer of
    *length* bytes for the next one.

    Instances of :data:`BLOCK` to :data:`REUSED_UP_TO` bytes take turns in three buffers reused
    from one to the next (read into by the socket: no allocation, no page faults); others get
    memory of their own. Reuse is safe because stream-zip joins its output into blocks of
    :data:`BLOCK` bytes and reads the next instance only when this one is used up: a block that
    holds bytes of an instance of at least :data:`BLOCK` bytes is complete, joined and sent
    before the instance after the next one is read, so a buffer is never written while a block
    still refers to it (two would do; the third is margin).
    """

    TURNS = 3

    def __init__(self) -> None:
        self._buffers = [bytearray() for _ in range(self.TURNS)]
        self._turn = 0

    def __call__(self, length: int) -> memoryview:
        if not BLOCK <= length <= REUSED_UP_TO:
            return memoryview(bytearray(length))
        turn, self._turn = self._turn, (self._turn + 1) % self.TURNS
        if len(self._buffers[turn]) < length:
            self._buffers[turn] = bytearray(length)  # a new buffer: views of the old one stay valid
        return memoryview(self._buffers[turn])[:length]


def stored_instances(study_uid: str, series_uid: str | None = None) -> Iterator[memoryview | bytes]:
    """The study's (or series') instances as the PACS stores them, one at a time, from one WADO-RS
    retrieval (``transfer-syntax=*``) parsed as it streams.

    Returns
    -------
    iterator of bytes-like
        PS3.10 files, in memory reused from one to the next (:class:`Places`): each is valid until
        the one after the next is asked for. The PACS was asked before this returns, so a refusal
        is an exception here.

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
    unframed = zerocopy.unframed_answer(response)

    def read(size: int) -> bytes:
        # As sent (identity: the PACS was asked not to compress), so that a part with a Content-Length is
        # read by count in one piece: no search for the delimiter, no joining of chunks.
        try:
            return response.raw.read(size, decode_content=False)
        except READ_ERRORS as exc:
            raise broken_answer(response, exc) from exc

    def readinto(view: memoryview) -> int:
        try:
            return unframed.readinto(view)
        except READ_ERRORS as exc:
            raise broken_answer(response, exc) from exc

    def parts():
        try:
            yield from multipart.each_part_into(read, boundary, Places(), readinto if unframed else None)
        finally:
            response.close()
    return parts()


def members(parts: Iterator[bytes]) -> Iterator[tuple]:
    """stream-zip members: each instance under its File ID as it arrives, then the ``DICOMDIR``.

    Each instance is one chunk, in stream-zip's buffered mode (one method object for all, where
    the streamed mode makes a class per member: 30 µs and garbage-collector work each). Of each
    instance only its place in the hierarchy is read, for its File ID
    (:func:`~fhir_facade.dicom.hierarchy.hierarchy`); its header is parsed only when not kept from an earlier download
    (:class:`~fhir_facade.dicomweb.media_directory.Listing`).

    Raises
    ------
    MediaError
        An instance pydicom cannot read or list (the stream then breaks off).
    """
    names, listing = Names(), Listing(directories())
    modified_at = datetime.datetime(*time.gmtime()[:6])
    for data in parts:
        try:
            keys = hierarchy(data)
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise MediaError(f"an instance of the study is not a DICOM file pydicom can read: {exc}") from exc
        name = names.file_id(keys)
        listing.add(data, name, keys.SOPInstanceUID)
        yield name, modified_at, MEMBER_MODE, NO_COMPRESSION_64, (data,)
        del data
    yield "DICOMDIR", modified_at, MEMBER_MODE, NO_COMPRESSION_64, (listing.dicomdir(),)


def zip_response(study_uid: str, series_uid: str | None = None) -> Response:
    """The study (or series) as a streaming DICOM-media ZIP (``application/zip``).

    The PACS is asked, and the first block of the ZIP made, before the answer starts: a refusal,
    or a first instance that cannot be zipped, is then a proper DICOMweb error, not a 500 or a
    broken stream. Authorization is the caller's (the proxy's ``authorize_study``). Under the
    production server the other blocks go to the client socket from here
    (:func:`~fhir_facade.dicomweb.zerocopy.write_blocks`).

    Raises
    ------
    PacsError
        The PACS failed, or its first instance cannot be zipped (:class:`MediaError`), before
        the answer started.
    """
    parts = stored_instances(study_uid, series_uid)
    blocks = stream_zip(members(parts), chunk_size=BLOCK)
    try:
        first = next(blocks)
    except BaseException:
        parts.close()  # the PACS answer, at once
        raise
    blocks = itertools.chain((first,), blocks)
    client = zerocopy.client_socket(request.environ)
    if client is not None:
        blocks = zerocopy.write_blocks(blocks, *client, get_pacs().timeout)
    response = Response(stream_with_context(blocks), mimetype=ZIP)
    response.headers["Content-Disposition"] = f'attachment; filename="study-{study_uid}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response
