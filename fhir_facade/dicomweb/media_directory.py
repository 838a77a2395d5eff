"""What the DICOMDIR of a DICOM-media ZIP is made of (:mod:`fhir_facade.dicomweb.media`).

- :class:`Names`: each instance's PS3.10 File ID (PS3.10 Sections 8.2 and 8.5), as pydicom's
  FileSet gives it, from the instance's place in the hierarchy;
- :func:`dicomdir`: the ``DICOMDIR`` (PS3.10 Section 7.2, Basic Directory IOD of PS3.3 Annex F)
  of the instances' headers, written in one pass (:class:`fhir_facade.dicom.dicomdir.Dicomdir`;
  FileSet itself is quadratic), FileSet only for what needs single-level records;
- :class:`Directories`: DICOMDIRs and instance headers kept per app, so that a study downloaded
  again costs neither a DICOMDIR nor parsing its headers.
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
from collections import OrderedDict

import pydicom
from flask import current_app
from pydicom.fileset import FileSet

from fhir_facade.dicom.dicomdir import Dicomdir, UnsupportedInstance
from fhir_facade.dicom.hierarchy import Hierarchy
from fhir_facade.pacs.client import PacsError

#: DICOMDIRs kept per app (:class:`Directories`); one of 300 instances is about 80 kB.
DICOMDIR_CACHE_SIZE = 64
#: Header bytes of instances kept per app (:class:`Directories`), in all; a CT slice's are 1-10 kB.
HEADS_CACHE_BYTES = 32 * 1024 * 1024


class MediaError(PacsError):
    """The PACS answered an instance the ZIP cannot hold (not one DICOM part)."""


class Names:
    """PS3.10 File IDs as pydicom's FileSet assigns them (PS3.10 Section 8.2: components of at
    most 8 upper case characters): ``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``, each number the
    record's place among its siblings in the order they first appear."""

    def __init__(self) -> None:
        self.children: dict[tuple, dict] = {}

    def _index(self, parent: tuple, key) -> int:
        siblings = self.children.setdefault(parent, {})
        return siblings.setdefault(key, len(siblings))

    def file_id(self, keys: Hierarchy) -> str:
        """The File ID of an instance, from its place in the hierarchy (:func:`hierarchy`)."""
        parts, parent = [], ()
        for prefix, key in zip(("PT", "ST", "SE", "IM"), keys):
            parts.append(f"{prefix}{self._index(parent, key):06d}")
            parent = parent + (key,)
        return "/".join(parts)


class Directories:
    """What a DICOMDIR is made of, kept per app (:func:`directories`) between downloads.

    - DICOMDIRs by the exact instances they list (each File ID with the instance's SOP Instance
      UID, length and CRC-32): the same study downloaded again gets its DICOMDIR at once, a
      changed one a new one (at most :data:`DICOMDIR_CACHE_SIZE`);
    - the header bytes (up to Pixel Data) of instances seen, by SOP Instance UID, length and
      CRC-32 (at most :data:`HEADS_CACHE_BYTES` in all): an instance seen before is not parsed
      again when a DICOMDIR has to be written.

    Thread-safe (gunicorn's threads share it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dicomdirs: OrderedDict[tuple, bytes] = OrderedDict()
        self._heads: OrderedDict[tuple, bytes] = OrderedDict()
        self._head_bytes = 0

    def dicomdir(self, key: tuple) -> bytes | None:
        """The DICOMDIR kept for exactly these instances (``(File ID, identity)`` pairs), if any."""
        with self._lock:
            return _lookup(self._dicomdirs, key)

    def keep_dicomdir(self, key: tuple, data: bytes) -> None:
        with self._lock:
            self._dicomdirs[key] = data
            while len(self._dicomdirs) > DICOMDIR_CACHE_SIZE:
                self._dicomdirs.popitem(last=False)

    def head(self, identity: tuple) -> bytes | None:
        """The header bytes kept for an instance ``(SOPInstanceUID, length, CRC-32)``, if any."""
        with self._lock:
            return _lookup(self._heads, identity)

    def keep_head(self, identity: tuple, head: bytes) -> None:
        with self._lock:
            if identity not in self._heads:
                self._heads[identity] = head
                self._head_bytes += len(head)
            while self._head_bytes > HEADS_CACHE_BYTES and self._heads:
                self._head_bytes -= len(self._heads.popitem(last=False)[1])


def _lookup(cache: OrderedDict, key: tuple):
    found = cache.get(key)
    if found is not None:
        cache.move_to_end(key)
    return found


def directories() -> Directories:
    """The app's :class:`Directories`."""
    return current_app.extensions.setdefault("facade_media_directories", Directories())


def header_bytes(data: bytes | memoryview, name: str) -> bytes:
    """The beginning of a PS3.10 file up to its Pixel Data (a copy): what a DICOMDIR record needs,
    once checked that the records can be made (so that an instance that cannot be listed stops the
    ZIP where it comes, before its bytes are sent, not at the end).

    Raises
    ------
    MediaError
        pydicom cannot read the file, or its records lack an element they require.
    """
    source = io.BytesIO(data)
    try:
        Dicomdir("FACADE").add(pydicom.dcmread(source, stop_before_pixels=True), name)
    except UnsupportedInstance:
        pass  # a single-level record: FileSet lists it (file_set_dicomdir)
    except Exception as exc:  # pydicom raises many kinds for a damaged file
        raise MediaError(f"an instance of the study cannot be listed in a DICOMDIR: {exc}") from exc
    return bytes(memoryview(data)[:source.tell()])


def dicomdir(heads: list[bytes], names: list[str]) -> bytes:
    """The ``DICOMDIR`` of instances whose files begin with *heads* (up to Pixel Data), named
    *names*: written in one pass (:class:`~fhir_facade.dicom.dicomdir.Dicomdir`, about 0.25 s of
    CPU for 300 instances), or by pydicom's FileSet (quadratic, about 5 s for 300) when an
    instance needs a single-level record.

    Raises
    ------
    MediaError
        An instance cannot be listed, or the FileSet named one otherwise than *names*.
    """
    headers = [pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True) for head in heads]
    directory = Dicomdir("FACADE")
    try:
        for header, name in zip(headers, names):
            directory.add(header, name)
        return directory.encode()
    except UnsupportedInstance:
        return file_set_dicomdir(headers, names)
    except ValueError as exc:  # pydicom's recorders: an element a record requires is missing
        raise MediaError(f"an instance of the study cannot be listed in a DICOMDIR: {exc}") from exc


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
