"""What the DICOMDIR of a DICOM-media ZIP is made of (:mod:`fhir_facade.dicomweb.media`).

- :class:`Names`: each instance's PS3.10 File ID (PS3.10 Sections 8.2 and 8.5), as pydicom's
  FileSet gives it, from the instance's place in the hierarchy;
- :class:`Listing`: the ``DICOMDIR`` (PS3.10 Section 7.2, Basic Directory IOD of PS3.3 Annex F)
  of one ZIP's instances, listed as they arrive and written in one pass
  (:class:`fhir_facade.dicom.dicomdir.Dicomdir`; FileSet itself is quadratic), FileSet only for
  what needs single-level records;
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
from pydicom.dataset import Dataset
from isal.isal_zlib import crc32
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


class MediaNotFound(MediaError):
    """The PACS has none of the instances asked for (404, as the multipart retrieval answers)."""

    status = 404


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
      UID, length and the CRC-32 of its header bytes): the same study downloaded again gets its
      DICOMDIR at once, a changed one a new one (at most :data:`DICOMDIR_CACHE_SIZE`);
    - the header bytes (up to Pixel Data) of instances seen, by SOP Instance UID and length (at
      most :data:`HEADS_CACHE_BYTES` in all): an instance that still begins with them is not
      parsed again.

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
        """The header bytes kept for an instance ``(SOPInstanceUID, length)``, if any."""
        with self._lock:
            return _lookup(self._heads, identity)

    def keep_head(self, identity: tuple, head: bytes) -> None:
        """Keep an instance's header bytes (replacing what was kept for it)."""
        with self._lock:
            replaced = self._heads.pop(identity, None)
            self._head_bytes += len(head) - (len(replaced) if replaced is not None else 0)
            self._heads[identity] = head
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


def _read_header(data: bytes | memoryview) -> tuple[Dataset, bytes]:
    """The header of a PS3.10 file (pydicom, up to Pixel Data) and its bytes (a copy).

    Raises
    ------
    MediaError
        pydicom cannot read the file.
    """
    source = io.BytesIO(data)
    try:
        header = pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds for a damaged file
        raise MediaError(f"an instance of the study is not a DICOM file pydicom can read: {exc}") from exc
    return header, bytes(memoryview(data)[:source.tell()])


class Listing:
    """The DICOMDIR of one ZIP's instances, listed as they arrive (:meth:`add`), written at the
    end (:meth:`dicomdir`).

    An instance seen before (its header kept by the app's :class:`Directories`) is not parsed:
    when every instance was seen, in the same places, the DICOMDIR written then is the answer. At
    the first new instance the records are made, of the instances before it (from their kept
    headers) and of each one after, as it arrives: an instance whose records cannot be made is
    refused where it comes, before its bytes are sent. Records are written in one pass
    (:class:`~fhir_facade.dicom.dicomdir.Dicomdir`, about 0.25 s of CPU for 300 instances), or,
    when an instance needs a single-level record, by pydicom's FileSet at the end (quadratic,
    about 5 s for 300).
    """

    def __init__(self, known: Directories) -> None:
        self.known = known
        self.names: list[str] = []
        self.heads: list[bytes] = []
        self.key: list[tuple] = []
        self._directory: Dicomdir | None = None
        self._by_file_set = False

    def add(self, data: bytes | memoryview, name: str, sop_instance_uid: str) -> None:
        """List an instance (its PS3.10 bytes) under File ID *name*.

        A header kept from an earlier download is used only if the instance still begins with
        exactly those bytes (its pixel data may have changed: the records do not depend on it).

        Raises
        ------
        MediaError
            The instance cannot be read, or its records lack an element they require (PS3.3 F.5).
        """
        identity = (sop_instance_uid, len(data))
        head, header = self.known.head(identity), None
        if head is not None and memoryview(data)[:len(head)].tobytes() != head:
            head = None
        if head is None:
            header, head = _read_header(data)
            if self._directory is None and not self._by_file_set:
                self._directory = Dicomdir("FACADE")
                for earlier_head, earlier_name in zip(self.heads, self.names):
                    self._list(_read_header(earlier_head)[0], earlier_name)
        if self._directory is not None:
            self._list(header if header is not None else _read_header(head)[0], name)
        if header is not None:
            self.known.keep_head(identity, head)
        self.names.append(name)
        self.heads.append(head)
        self.key.append((name, identity, crc32(head)))

    def _list(self, header: Dataset, name: str) -> None:
        try:
            self._directory.add(header, name)
        except UnsupportedInstance:
            self._directory, self._by_file_set = None, True
        except ValueError as exc:  # pydicom's recorders: an element a record requires is missing
            raise MediaError(f"an instance of the study cannot be listed in a DICOMDIR: {exc}") from exc

    def dicomdir(self) -> bytes:
        """The ``DICOMDIR`` of the instances listed, kept by the app for the same instances.

        Raises
        ------
        MediaError
            FileSet cannot list an instance, or named one otherwise than the ZIP does.
        """
        key = tuple(self.key)
        found = self.known.dicomdir(key) if self._directory is None else None
        if found is not None:
            return found
        if self._directory is None and not self._by_file_set:  # seen before, not in these places
            self._directory = Dicomdir("FACADE")
            for head, name in zip(self.heads, self.names):
                self._list(_read_header(head)[0], name)
        if self._directory is not None:
            data = self._directory.encode()
        else:
            data = file_set_dicomdir([_read_header(head)[0] for head in self.heads], self.names)
        self.known.keep_dicomdir(key, data)
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
