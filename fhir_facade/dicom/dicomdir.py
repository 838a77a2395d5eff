"""A DICOMDIR written in one pass from instance headers (PS3.10 Section 7.2, PS3.3 Annex F).

pydicom's :class:`~pydicom.fileset.FileSet` writes a valid DICOMDIR, but staging an instance
costs time linear in those already staged (about 5 s for a 300-slice series, most of the time
of a study downloaded as DICOM media) and writing copies every instance to disk. Here the same
records are made by the same recorders (:data:`pydicom.fileset.DIRECTORY_RECORDERS`, which a
deployment may customise for FileSet and this alike), arranged as FileSet arranges them, each
encoded once by pydicom's writer as it is made; the offsets between records (UL values of 4
bytes, so a record's length does not depend on them) are set in the encoded bytes at the end.
FileSet reads the result back (that is tested).

Only the four-level hierarchy PATIENT / STUDY / SERIES / leaf is written here; an instance
FileSet would list in a single-level record raises :class:`UnsupportedInstance`, for the caller
to fall back on FileSet.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import DIRECTORY_RECORDERS
from pydicom.fileset import _four_level_record_type, _single_level_record_type
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

#: Levels of the hierarchy above the leaf record (PS3.3 Table F.4-1).
LEVELS = ("PATIENT", "STUDY", "SERIES")
#: Bytes before a Directory Record Sequence item's first element: the SQ element's tag, VR,
#: reserved bytes and length in Explicit VR Little Endian (PS3.5 Section 7.1.2).
_SEQUENCE_HEADER = 12
#: An item's tag and length (PS3.5 Section 7.5).
_ITEM_HEADER = 8
#: Tag, VR and length of the two offsets of a record, Explicit VR Little Endian (PS3.5 7.1.2).
_NEXT_TAG = b"\x04\x00\x00\x14UL\x04\x00"
_LOWER_TAG = b"\x04\x00\x20\x14UL\x04\x00"
#: Where their values are in an encoded record (the in-use flag, US, is 10 bytes between).
_NEXT_AT = 8
_LOWER_AT = 12 + 10 + 8


#: What every record of an instance names (PS3.3 Table F.5-1 and F.3-3: Type 1 and 1C keys).
_REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")


class UnsupportedInstance(ValueError):
    """An instance this writer cannot list (FileSet would give it a single-level record)."""


class _Node:
    """A directory record, encoded, with its children in the order they first appear."""

    __slots__ = ("record", "children", "offset")

    def __init__(self, record: Dataset | None) -> None:
        self.record = _encoded(record) if record is not None else None
        self.children: dict[str, _Node] = {}
        self.offset = 0

    def walk(self):
        """This node's record (unless the root) and every record below it, depth first."""
        if self.record is not None:
            yield self
        for child in self.children.values():
            yield from child.walk()


def _record(header: Dataset, record_type: str) -> Dataset:
    """One directory record of an instance, as ``FileSet._recordify`` makes it (PS3.3 F.5)."""
    record = DIRECTORY_RECORDERS[record_type](header)
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = record_type
    if "SpecificCharacterSet" in header:
        record.SpecificCharacterSet = header.SpecificCharacterSet
    return record


def _encoded(record: Dataset) -> bytearray:
    """The record in Explicit VR Little Endian. Its first elements are (0004,1400) Offset of the
    Next Directory Record (UL), (0004,1410) Record In-use Flag (US) and (0004,1420) Offset of
    Referenced Lower Level Directory Entity (UL): the offsets' values are at :data:`_NEXT_AT`
    and :data:`_LOWER_AT`, to be set once every record's length is known."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, record)
    data = bytearray(fp.getvalue())
    if data[:_NEXT_AT] != _NEXT_TAG or data[_LOWER_AT - 8:_LOWER_AT] != _LOWER_TAG:
        raise ValueError("a directory record does not begin with its offsets")  # never seen
    return data


class Dicomdir:
    """A DICOMDIR built an instance at a time (PS3.10 Section 7.2; Basic Directory IOD, PS3.3
    Annex F): :meth:`add` each instance's header as it comes, :meth:`encode` at the end.

    Only the records are kept (a few hundred bytes an instance), not the headers. Records are
    ordered as FileSet orders them: depth first, siblings in the order they first appear.

    Parameters
    ----------
    file_set_id : str
        The File-set ID (0004,1130).
    """

    def __init__(self, file_set_id: str = "FACADE") -> None:
        self.file_set_id = file_set_id
        self.root = _Node(None)

    def add(self, header: Dataset, file_id: str) -> None:
        """List an instance under *file_id* (its components joined by ``/``, PS3.10 Section 8.5).

        Parameters
        ----------
        header : Dataset
            The instance's dataset (its header is enough), with its File Meta Information.
        file_id : str
            Where the instance is in the File-set.

        Raises
        ------
        UnsupportedInstance
            The instance needs a single-level record (not written here).
        ValueError
            The instance lacks an element its record requires (pydicom's recorders, PS3.3 F.5).
        """
        missing = [keyword for keyword in _REQUIRED if keyword not in header]
        if missing or "TransferSyntaxUID" not in header.get("file_meta", {}):
            raise ValueError(f"the instance has no {', '.join(missing) or 'TransferSyntaxUID'}, which its records require")
        if _single_level_record_type(header) != "PATIENT":
            raise UnsupportedInstance(f"instance {header.get('SOPInstanceUID')} needs a single-level record")
        node = self.root
        for record_type, keyword in zip(LEVELS, ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")):
            key = str(header[keyword].value)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(_record(header, record_type))
            node = child
        leaf = _record(header, _four_level_record_type(header))
        leaf.ReferencedFileID = file_id.split("/")
        leaf.ReferencedSOPClassUIDInFile = header.SOPClassUID
        leaf.ReferencedSOPInstanceUIDInFile = header.SOPInstanceUID
        leaf.ReferencedTransferSyntaxUIDInFile = header.file_meta.TransferSyntaxUID
        node.children.setdefault(str(header.SOPInstanceUID), _Node(leaf))

    def encode(self) -> bytes:
        """The PS3.10 file ``DICOMDIR``, Explicit VR Little Endian, listing every instance added."""
        return _encode(self.root, self.file_set_id)


def write_dicomdir(headers: Sequence[Dataset], file_ids: Sequence[str], file_set_id: str = "FACADE") -> bytes:
    """Encode the DICOMDIR of instances at once (see :class:`Dicomdir`, whose errors it raises)."""
    dicomdir = Dicomdir(file_set_id)
    for header, file_id in zip(headers, file_ids, strict=True):
        dicomdir.add(header, file_id)
    return dicomdir.encode()


def _encode(root: _Node, file_set_id: str) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.FileSetID = file_set_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = []

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    write_dataset(fp, ds[:0x00041200])
    first_at = fp.tell()
    write_dataset(fp, ds[0x00041200:0x00041220])

    # A record's offset is where its item starts, from the start of the file (PS3.3 F.3.2.2).
    nodes = list(root.walk())
    offset = fp.tell() + _SEQUENCE_HEADER
    for node in nodes:
        node.offset = offset
        offset += _ITEM_HEADER + len(node.record)
    _link(root)
    # (0004,1220) Directory Record Sequence, of defined length, its items too (PS3.5 7.5.2).
    fp.write(b"\x04\x00\x20\x12SQ\x00\x00" + struct.pack("<I", offset - fp.tell() - _SEQUENCE_HEADER))
    for node in nodes:
        fp.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(node.record)))
        fp.write(node.record)
    if root.children:
        children = list(root.children.values())
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = children[0].offset
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = children[-1].offset
        fp.seek(first_at)
        write_data_element(fp, ds["OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"])
        write_data_element(fp, ds["OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity"])
    return fp.getvalue()


def _link(node: _Node) -> None:
    """Set each record's offsets of its next sibling and of its first child (0 if none)."""
    children = list(node.children.values())
    for index, child in enumerate(children):
        following = children[index + 1].offset if index + 1 < len(children) else 0
        grandchildren = list(child.children.values())
        struct.pack_into("<I", child.record, _NEXT_AT, following)
        struct.pack_into("<I", child.record, _LOWER_AT, grandchildren[0].offset if grandchildren else 0)
        _link(child)
