"""A study or series as one ZIP laid out as DICOM media (issue 15: "the CD as a file").

Offered on WADO-RS study and series retrieval for ``Accept: application/zip`` (the proxy asks
:func:`wants_zip` before its DICOM negotiation). The ZIP holds each instance as the PACS stores it
(WADO-RS with ``transfer-syntax=*``, byte for byte) under a PS3.10 File ID of 8-character upper
case components (``PT000000/ST000000/SE000000/IM000000``, PS3.10 Section 8.2 and 8.5), and a
``DICOMDIR`` (PS3.10 Section 7.2, Basic Directory IOD of PS3.3 Annex F) at the root, written from
the headers of the very files in the ZIP with the records pydicom's FileSet would make
(:class:`fhir_facade.dicom.dicomdir.Dicomdir`, in one pass; FileSet itself is quadratic).

Memory is bounded: the study comes from the PACS as one WADO-RS retrieval, parsed as it streams
(:func:`fhir_facade.dicomweb.multipart.each_part_into`), and each instance is zipped as it arrives
(zipstream-ng, stored without compression: DICOM pixel data hardly shrinks and deflating would
halve throughput), so the facade holds three instances at most and the headers of the others.
zipstream-ng passes a member's bytes through as given, so an instance goes from the buffer the
PACS socket read it into to the client socket without another copy (:func:`zip_pieces`). The ``DICOMDIR`` is
therefore the last member: a ZIP's central directory lets readers find it wherever it is, and
only headers that were really sent are listed. The File IDs are given as the instances arrive,
by FileSet's own rule (:class:`Names`), and the DICOMDIR references exactly those; a DICOMDIR is
kept per app for the same instances, so downloading a study again costs no DICOMDIR at all.

A failure of the PACS after the answer started can only break the stream off: the client then
holds a truncated ZIP, which every unzip tool reports (no central directory).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import zipstream.ng as _zipstream_ng
from flask import Response, request, stream_with_context
from isal.isal_zlib import crc32
from zipstream import ZIP_STORED, ZipStream

from fhir_facade.dicom.hierarchy import hierarchy
from fhir_facade.dicomweb import multipart, zerocopy
from fhir_facade.dicomweb.media_directory import Listing, MediaError, MediaNotFound, Names, directories
from fhir_facade.dicomweb.negotiation import media_ranges, parse_media_type
from fhir_facade.pacs.client import READ_ERRORS, broken_answer, get_pacs

__all__ = ["MediaError", "Names", "ZIP", "wants_zip", "stored_instances", "members", "zip_pieces", "joined",
           "zip_response"]

ZIP = "application/zip"
#: Each instance as stored (PS3.18 Section 8.7.3.5.2: ``transfer-syntax=*``).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Bytes of the ZIP sent at a time (joined, or written with one ``writev``).
BLOCK = 256 * 1024
#: Instances of BLOCK to this many bytes are read into memory reused from one to the next
#: (:class:`Places`); others into memory of their own.
REUSED_UP_TO = 8 * 1024 * 1024

#: zipstream-ng computes every member's CRC-32 with ``crc32`` imported into its module from
#: zipfile, which is CPython's system zlib (1.2.13 here: 2.3 GB/s, a third of the facade's CPU for
#: a study). ISA-L's CRC-32 (python-isal, the same CRC: ISO 3309 / ITU-T V.42, as PKWARE's
#: APPNOTE 4.4.7 asks) uses the CPU's carry-less multiply, ten times as fast; zipstream-ng looks the
#: name up at each call, so it is bound to ISA-L's there. zipstream-ng is pinned and
#: ``tests/fhir_facade/dicomweb/test_media_zip.py`` checks the binding and every member's CRC.
_zipstream_ng.crc32 = crc32


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
    memory of their own. Reuse is safe because the ZIP's pieces are sent or copied as soon as
    :data:`BLOCK` bytes are pending (:func:`joined`, :func:`zerocopy.write_pieces`) and
    zipstream-ng passes an instance as one piece, before the next instance is read: an instance of
    at least :data:`BLOCK` bytes is out before its buffer can be read into again (one would do;
    the other two are margin).
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
        the third after it is asked for. The PACS was asked before this returns, so a refusal
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
        error = MediaNotFound if status == 404 else MediaError
        raise error(f"the PACS answered {status} without the instances", upstream_status=status)
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


def members(parts: Iterator[bytes | memoryview]) -> Iterator[tuple[str, bytes | memoryview]]:
    """The ZIP's members, ``(name, bytes)``: each instance under its File ID as it arrives, then
    the ``DICOMDIR``.

    Of each instance only its place in the hierarchy is read, for its File ID
    (:func:`~fhir_facade.dicom.hierarchy.hierarchy`); its header is parsed only when not kept from
    an earlier download (:class:`~fhir_facade.dicomweb.media_directory.Listing`).

    Raises
    ------
    MediaError
        An instance pydicom cannot read or list (the stream then breaks off).
    """
    names, listing = Names(), Listing(directories())
    for data in parts:
        try:
            keys = hierarchy(data)
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise MediaError(f"an instance of the study is not a DICOM file pydicom can read: {exc}") from exc
        name = names.file_id(keys)
        listing.add(data, name, keys.SOPInstanceUID)
        yield name, data
        del data
    yield "DICOMDIR", listing.dicomdir()


def zip_pieces(parts: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """The ZIP of *parts* (PKWARE APPNOTE 6.3: stored members, data descriptors, ZIP64 where
    needed), piece by piece as zipstream-ng writes it: each member's local header, its bytes as
    given (not copied), its data descriptor; the central directory last."""
    stream = ZipStream(compress_type=ZIP_STORED)
    for name, data in members(parts):
        stream.add([data], name, size=len(data))
        yield from stream.file()
    yield from stream.footer()


def joined(pieces: Iterator[bytes | memoryview], size: int = BLOCK) -> Iterator[bytes]:
    """*pieces* joined into blocks of at least *size* bytes (copies, taken as soon as *size* bytes
    are pending): what a WSGI server takes."""
    pending, count = [], 0
    for piece in pieces:
        pending.append(piece)
        count += len(piece)
        if count >= size:
            yield b"".join(pending)
            pending, count = [], 0
    if pending:
        yield b"".join(pending)


def zip_response(study_uid: str, series_uid: str | None = None) -> Response:
    """The study (or series) as a streaming DICOM-media ZIP (``application/zip``).

    The PACS is asked, and the first block of the ZIP made, before the answer starts: a refusal,
    or a first instance that cannot be zipped, is then a proper DICOMweb error, not a 500 or a
    broken stream. Authorization is the caller's (the proxy's ``authorize_study``). Under the
    production server the rest goes to the client socket from here, each instance from the
    buffer it was read into (:func:`~fhir_facade.dicomweb.zerocopy.write_pieces`).

    Raises
    ------
    PacsError
        The PACS failed, or its first instance cannot be zipped (:class:`MediaError`), before
        the answer started.
    """
    parts = stored_instances(study_uid, series_uid)
    client = zerocopy.client_socket(request.environ)
    if client is not None:
        blocks = zerocopy.write_pieces(zip_pieces(parts), *client, get_pacs().timeout, BLOCK)
    else:
        blocks = joined(zip_pieces(parts))
    try:
        first = next(blocks)
    except BaseException:
        parts.close()  # the PACS answer, at once
        raise
    blocks = itertools.chain((first,), blocks)
    response = Response(stream_with_context(blocks), mimetype=ZIP)
    response.headers["Content-Disposition"] = f'attachment; filename="study-{study_uid}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response
