"""Where an instance sits in the DICOM hierarchy, read cheaply from its PS3.10 bytes.

A study downloaded as DICOM media (:mod:`fhir_facade.dicomweb.media`) names each instance by
its patient, study, series and SOP Instance (PS3.10 Section 8.5 File IDs), hundreds of times per
download. ``pydicom.dcmread`` builds a whole Dataset for that, about 0.2 ms per instance even
with ``stop_before_pixels`` (a third of the facade's CPU for a 300-slice study); the four values
are near the start of the data set, in ascending tag order (PS3.5 Section 7.1), so here pydicom's
raw element reader (:func:`pydicom.filereader.data_element_generator`) walks the File Meta
Information and the data set only up to (0020,000E) Series Instance UID, converting nothing but
those four values: about 0.06 ms.

Whatever that walk does not expect (no ``DICM`` prefix, a deflated data set, a damaged element)
is left to ``pydicom.dcmread``, which reads the file as usual or raises.
"""
from __future__ import annotations

import io
import struct
from typing import NamedTuple

import pydicom
from pydicom.filereader import data_element_generator
from pydicom.tag import Tag

#: PS3.10 Section 7.1: a 128-byte preamble, then the prefix.
_PREFIX_AT, _PREFIX = 128, b"DICM"
#: (0002,0010) Transfer Syntax UID, in the File Meta Information (always Explicit VR Little Endian).
_TRANSFER_SYNTAX_UID = 0x00020010
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: Deflated syntaxes compress the data set (PS3.5 Section A.5): left to dcmread.
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
_LAST = Tag(0x0020, 0x000E)
_LAST_TAG = 0x0020000E  # an int: comparing with a BaseTag calls Python code
#: Tag -> place in :class:`Hierarchy`.
_PLACES = {0x00100020: 0, 0x0020000D: 1, 0x0020000E: 2, 0x00080018: 3}
_PADDING = b" \x00"
#: An element's header, Little Endian (PS3.5 Section 7.1.2): tag, VR and a 2-byte length, ...
_EXPLICIT = struct.Struct("<HH2sH")
_U16, _U32 = struct.Struct("<H"), struct.Struct("<L")
#: ... or, for these VRs, 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
#: Bytes read first; a CT or MR header is a few kB, so the four values are almost always within.
HEAD_BYTES = 16 * 1024
#: Values longer than this (bytes) are skipped, not read: none of the four is near it.
_DEFER = 1024


class Hierarchy(NamedTuple):
    """An instance's keys at each level of the DICOM hierarchy (PS3.3 Annex C.12; PS3.4 C.6.1).

    Attributes
    ----------
    PatientID : bytes
        (0010,0020) as encoded, trailing padding removed (``b""`` when absent). Bytes, not text:
        it only groups instances, and its character set does not matter for that.
    StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID : str
        The UIDs, ``""`` when absent.
    """

    PatientID: bytes
    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPInstanceUID: str


def hierarchy(data: bytes | memoryview) -> Hierarchy:
    """The patient, study, series and SOP Instance keys of a PS3.10 file.

    Parameters
    ----------
    data : bytes-like
        A whole PS3.10 file (PS3.10 Section 7.1). Only its first :data:`HEAD_BYTES` are copied
        and read, unless the four values are further in.

    Returns
    -------
    Hierarchy
        The same values ``pydicom.dcmread`` gives (PatientID as its encoded bytes).

    Raises
    ------
    Exception
        Whatever ``pydicom.dcmread`` raises for a file it cannot read.
    """
    view = memoryview(data)
    try:
        for walk in (_scanned, _walked):
            try:
                try:
                    return walk(view[:HEAD_BYTES].tobytes())
                except _Truncated:
                    return walk(view.tobytes())
            except _Unusual:
                continue
    except Exception:  # the raw walk met what it does not expect: pydicom reads it as usual
        pass
    return _read(view.tobytes())


class _Truncated(ValueError):
    """The bytes given end before the data set's elements past (0020,000E)."""


class _Unusual(ValueError):
    """What :func:`_scanned` leaves to pydicom's element reader."""


def _scanned(data: bytes) -> Hierarchy:
    """The four values of a Little Endian data set whose elements before them all have a defined
    length (PS3.5 Sections 7.1.2 and 7.1.3): almost every file; the rest is :class:`_Unusual`."""
    if data[_PREFIX_AT:_PREFIX_AT + 4] != _PREFIX:
        raise _Unusual("no PS3.10 prefix")
    pos, syntax = _PREFIX_AT + 4, None
    while pos + 8 <= len(data) and _U16.unpack_from(data, pos)[0] == 2:  # File Meta: Explicit VR LE
        tag, pos, length = _element(data, pos, implicit=False)
        if tag == _TRANSFER_SYNTAX_UID:
            syntax = data[pos:pos + length].rstrip(_PADDING).decode("ascii", "replace")
        pos += length
    if syntax is None or syntax in _DEFLATED or syntax == _EXPLICIT_VR_BIG_ENDIAN:
        raise _Unusual("no transfer syntax, or not a little endian data set")
    implicit, values = syntax == _IMPLICIT_VR_LITTLE_ENDIAN, [b"", b"", b"", b""]
    while True:
        if pos + 8 > len(data):
            raise _Truncated("the bytes end before (0020,000E)")
        tag, pos, length = _element(data, pos, implicit)
        if tag > _LAST_TAG:
            return Hierarchy(values[0], *(value.decode("ascii") for value in values[1:]))
        if length == _UNDEFINED:
            raise _Unusual("an element of undefined length")
        place = _PLACES.get(tag)
        if place is not None:
            if pos + length > len(data):
                raise _Truncated("the bytes end inside a value")
            values[place] = data[pos:pos + length].rstrip(_PADDING)
        pos += length


def _element(data: bytes, pos: int, implicit: bool) -> tuple[int, int, int]:
    """Tag, where the value starts and its length, of the element at *pos* (PS3.5 Section 7.1)."""
    group, number, vr, short = _EXPLICIT.unpack_from(data, pos)
    tag = group << 16 | number
    if implicit:
        return tag, pos + 8, _U32.unpack_from(data, pos + 4)[0]
    if not (vr.isalpha() and vr.isupper()):
        # Not a VR: an Implicit VR data set labelled Explicit (PS3.5 Section 7.1.3), read by pydicom.
        raise ValueError("an explicit VR element without a VR")
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            raise _Truncated("the bytes end inside an element header")
        return tag, pos + 12, _U32.unpack_from(data, pos + 8)[0]
    return tag, pos + 8, short


def _walked(data: bytes) -> Hierarchy:
    if data[_PREFIX_AT:_PREFIX_AT + 4] != _PREFIX:
        raise ValueError("no PS3.10 prefix")
    source = io.BytesIO(data)
    source.seek(_PREFIX_AT + 4)
    syntax = None
    for element in data_element_generator(source, False, True, stop_when=lambda tag, vr, length: tag.group != 2):
        if element.tag == _TRANSFER_SYNTAX_UID:
            syntax = element.value.rstrip(_PADDING).decode("ascii")
    if syntax is None or syntax in _DEFLATED:
        raise ValueError("no transfer syntax, or a deflated data set")
    values = [b"", b"", b"", b""]
    past = []

    def stop(tag, vr, length) -> bool:
        if tag > _LAST:
            past.append(tag)
            return True
        return False

    walk = data_element_generator(source, syntax == _IMPLICIT_VR_LITTLE_ENDIAN, syntax != _EXPLICIT_VR_BIG_ENDIAN,
                                  stop_when=stop, defer_size=_DEFER)
    for element in walk:
        place = _PLACES.get(element.tag)
        if place is not None and element.value is not None:
            values[place] = bytes(element.value).rstrip(_PADDING)
    if not past and source.tell() >= len(data):
        raise _Truncated("the first bytes end before (0020,000E)")
    return Hierarchy(values[0], *(value.decode("ascii") for value in values[1:]))


def _read(data: bytes) -> Hierarchy:
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(_PLACES))
    values = []
    for tag in _PLACES:
        element = header.get_item(tag)  # as read: a raw element, its value the encoded bytes
        value = b"" if element is None or element.value is None else element.value
        values.append(bytes(value).rstrip(_PADDING) if isinstance(value, bytes) else str(value).encode())
    return Hierarchy(values[0], *(value.decode("ascii") for value in values[1:]))
