"""An instance's place in the hierarchy read from its first bytes (fhir_facade.dicom.hierarchy): the same
values pydicom.dcmread gives, whatever the transfer syntax, sequences, header length or cut, and which of
the three readers (byte scan, pydicom's element walk, dcmread) answered."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, generate_uid)

import devpacs
import samples
from fhir_facade.dicom import hierarchy as module
from fhir_facade.dicom.hierarchy import HEAD_BYTES, Hierarchy, hierarchy

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
#: Which reader answers for a plain file of each syntax.
TIER = {ExplicitVRLittleEndian: "_scanned", ImplicitVRLittleEndian: "_scanned", ExplicitVRBigEndian: "_walked",
        DeflatedExplicitVRLittleEndian: "_read"}
KEYWORDS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def expected(data: bytes) -> Hierarchy:
    """What pydicom.dcmread reads: PatientID as encoded (trailing padding off), the UIDs as str."""
    ds = pydicom.dcmread(io.BytesIO(data))
    raw = ds.get_item(0x00100020)  # not converted yet: the value is the encoded bytes
    patient_id = b"" if raw is None or raw.value is None else bytes(raw.value).rstrip(b" \x00")
    return Hierarchy(patient_id, *(str(ds.get(keyword, "")) for keyword in KEYWORDS[1:]))


def part10(transfer_syntax=ExplicitVRLittleEndian, private: tuple[int, int] | None = None, drop=(), **attrs) -> bytes:
    """A PS3.10 file; *private* ``(group, length)`` adds a private OB element of that many bytes, the
    keywords *drop* are removed from the data set (not from the File Meta Information)."""
    ds = samples.make_instance(transfer_syntax=transfer_syntax, **attrs)
    for keyword in drop:
        delattr(ds, keyword)
    if private is not None:
        group, length = private
        ds.private_block(group, "FACADE TEST", create=True).add_new(0x01, "OB", bytes(range(256)) * (length // 256)
                                                                    + b"\x01" * (length % 256))
    return devpacs.to_part10(ds)


@pytest.fixture
def tiers(monkeypatch) -> list[str]:
    """The names of the readers that returned a value, in order (the first to return answers)."""
    answered = []
    for name in ("_scanned", "_walked", "_read"):
        def spy(data, real=getattr(module, name), name=name):
            result = real(data)
            answered.append(name)
            return result
        monkeypatch.setattr(module, name, spy)
    return answered


def refuse(monkeypatch, *names: str) -> None:
    """Make the readers *names* fail the test if they are reached."""
    for name in names:
        def fail(data, name=name):
            raise AssertionError(f"{name} should not be needed")
        monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("transfer_syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_each_transfer_syntax_gives_what_dcmread_gives(transfer_syntax, tiers):
    ds = samples.make_instance(transfer_syntax=transfer_syntax, PatientID="PAT-0001")
    data = devpacs.to_part10(ds)
    assert hierarchy(data) == expected(data) == (b"PAT-0001", ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                 ds.SOPInstanceUID)
    assert tiers == [TIER[transfer_syntax]]


def test_a_compressed_file_is_scanned_too(tiers):
    """Encapsulated Pixel Data (undefined length, PS3.5 Section A.4) comes after the values: no matter."""
    data = part10(pydicom.uid.RLELossless, PatientID="PAT-RLE", Rows=32, Columns=32)
    assert b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" in data
    assert hierarchy(data) == expected(data) and hierarchy(data).PatientID == b"PAT-RLE"
    assert tiers == ["_scanned", "_scanned"]


def test_the_common_file_is_scanned_without_pydicom(monkeypatch):
    data = part10(PatientID="PAT-0001")
    want = expected(data)
    refuse(monkeypatch, "_walked", "_read")
    assert hierarchy(data) == want
    assert hierarchy(bytearray(data)) == want
    assert hierarchy(memoryview(data)) == want
    assert hierarchy(memoryview(b"xx" + data)[2:]) == want  # a view into a larger buffer


def test_values_come_as_typed_padding_stripped():
    # Odd lengths: pydicom pads the LO with a space and the UIs with a NUL (PS3.5 Section 6.2).
    data = part10(PatientID="A 1", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4",
                  SOPInstanceUID="1.2.3.4.5")
    assert data.count(b"A 1 ") == 1 and data.count(b"1.2.3\x00") == 1
    got = hierarchy(data)
    assert got == expected(data) == (b"A 1", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert [type(value) for value in got] == [bytes, str, str, str]


@pytest.mark.parametrize("transfer_syntax", SYNTAXES[:3], ids=lambda uid: uid.name)
@pytest.mark.parametrize("absent", KEYWORDS)
def test_an_absent_value_is_empty(transfer_syntax, absent):
    data = part10(transfer_syntax, PatientID="PAT-0001", drop=[absent])
    assert pydicom.dcmread(io.BytesIO(data)).get(absent) is None
    got = hierarchy(data)
    assert got == expected(data)
    assert getattr(got, absent) == (b"" if absent == "PatientID" else "")
    assert sum(1 for value in got if not value) == 1


@pytest.mark.parametrize("charset, patient_id, encoded", [
    ("ISO_IR 100", "MÜLLER-Ä1", "MÜLLER-Ä1".encode("latin-1")),
    ("ISO_IR 192", "患者-Ω7", "患者-Ω7".encode("utf-8")),
])
@pytest.mark.parametrize("transfer_syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_a_non_ascii_patient_id_comes_as_encoded(transfer_syntax, charset, patient_id, encoded):
    data = part10(transfer_syntax, SpecificCharacterSet=charset, PatientID=patient_id)
    got = hierarchy(data)
    assert got == expected(data)
    assert got.PatientID == encoded
    assert got.PatientID.decode(pydicom.charset.python_encoding[charset]) == patient_id


def with_referenced_images(transfer_syntax, undefined: bool, **attrs) -> tuple[bytes, str]:
    """A file with a ReferencedImageSequence (0008,1140) whose item holds a SeriesInstanceUID of its own."""
    ds = samples.make_instance(transfer_syntax=transfer_syntax, PatientID="PAT-SEQ", **attrs)
    nested = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = generate_uid()
    item.SeriesInstanceUID = nested
    item.is_undefined_length_sequence_item = undefined
    ds.ReferencedImageSequence = Sequence([item])
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    data = devpacs.to_part10(ds)
    tag = b"\x08\x00\x40\x11"
    assert tag in data and (b"\xff\xff\xff\xff" in data[data.index(tag):data.index(tag) + 16]) is undefined
    return data, nested


@pytest.mark.parametrize("transfer_syntax", SYNTAXES[:2], ids=lambda uid: uid.name)
def test_an_undefined_length_sequence_is_walked_and_its_items_not_taken_for_the_data_set(transfer_syntax, tiers):
    data, nested = with_referenced_images(transfer_syntax, undefined=True)
    got = hierarchy(data)
    assert got == expected(data)
    assert got.SeriesInstanceUID != nested and got.PatientID == b"PAT-SEQ"
    assert tiers == ["_walked"]


@pytest.mark.parametrize("transfer_syntax", SYNTAXES[:2], ids=lambda uid: uid.name)
def test_a_nested_series_uid_is_not_the_series_when_the_data_set_has_none(transfer_syntax):
    for undefined in (True, False):
        data, nested = with_referenced_images(transfer_syntax, undefined, SeriesInstanceUID=None)
        got = hierarchy(data)
        assert got == expected(data)
        assert got.SeriesInstanceUID == "" and nested.encode() in data


@pytest.mark.parametrize("transfer_syntax", SYNTAXES[:2], ids=lambda uid: uid.name)
def test_a_defined_length_sequence_is_skipped_by_the_scan(transfer_syntax, tiers):
    data, nested = with_referenced_images(transfer_syntax, undefined=False)
    got = hierarchy(data)
    assert got == expected(data) and got.SeriesInstanceUID != nested
    assert tiers == ["_scanned"]


@pytest.mark.parametrize("transfer_syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_a_header_longer_than_the_first_bytes_read(transfer_syntax, tiers):
    data = part10(transfer_syntax, private=(0x0019, 4 * HEAD_BYTES), PatientID="PAT-LONG")
    got = hierarchy(data)
    assert got == expected(data)
    assert got.PatientID == b"PAT-LONG"
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        assert data.find(got.SeriesInstanceUID.encode()) > HEAD_BYTES  # really beyond the first bytes
    assert tiers == [TIER[transfer_syntax]]


@pytest.mark.parametrize("group, keyword", [(0x0009, "PatientID"), (0x0019, "StudyInstanceUID"),
                                            (0x0019, "SeriesInstanceUID")])
@pytest.mark.parametrize("transfer_syntax", SYNTAXES[:3], ids=lambda uid: uid.name)
def test_a_value_cut_by_the_first_bytes_boundary(transfer_syntax, group, keyword):
    attrs = {"PatientID": "PATIENT-0123456789"}
    base = part10(transfer_syntax, private=(group, 12000), **attrs)
    value = expected(base)[KEYWORDS.index(keyword)]
    value = value if isinstance(value, bytes) else value.encode()
    # Move the value so that its first 4 bytes are the last of the first HEAD_BYTES (offsets are even).
    shift = HEAD_BYTES - 4 - base.index(value, 12000)
    data = part10(transfer_syntax, private=(group, 12000 + shift),
                  **attrs, **{k: v for k, v in zip(KEYWORDS[1:], expected(base)[1:])})
    assert data.index(value, 12000) == HEAD_BYTES - 4 and len(value) > 4
    assert hierarchy(data) == expected(data) == expected(base)


# A cut inside (0008,0005) makes pydicom's element walk warn of the cut charset before the whole file is read.
@pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")
@pytest.mark.parametrize("case", ["plain", "implicit", "big-endian", "sequence", "charset"])
def test_every_place_of_the_first_bytes_boundary(case, monkeypatch):
    """HEAD_BYTES made small enough to fall at every byte of the header in turn."""
    if case == "sequence":
        data, _ = with_referenced_images(ExplicitVRLittleEndian, undefined=True)
    else:
        syntax = {"implicit": ImplicitVRLittleEndian, "big-endian": ExplicitVRBigEndian}.get(case,
                                                                                           ExplicitVRLittleEndian)
        data = part10(syntax, PatientID="PAT-CUT" if case != "charset" else "Jürgen",
                      SpecificCharacterSet="ISO_IR 192")
    want = expected(data)
    end = data.index(want.SeriesInstanceUID.encode()) + 80
    for head in range(1, end):
        monkeypatch.setattr(module, "HEAD_BYTES", head)
        assert hierarchy(data) == want, head


def mislabelled(declared, implicit: bool, pixel_side: int) -> tuple[bytes, pydicom.Dataset]:
    """A file whose File Meta Information says *declared* but whose data set is encoded with implicit
    (or explicit) VRs: found in the wild, and read by dcmread as it is encoded (with a warning)."""
    ds = samples.make_instance(transfer_syntax=declared, PatientID="PAT-MIX", Rows=pixel_side, Columns=pixel_side)
    good = devpacs.to_part10(ds)
    meta_end = 132 + 12 + pydicom.dcmread(io.BytesIO(good)).file_meta.FileMetaInformationGroupLength
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, implicit
    body = ds.copy()
    del body.file_meta
    write_dataset(encoded, body)
    return good[:meta_end] + encoded.getvalue(), ds


@pytest.mark.filterwarnings("ignore:Expected:UserWarning")
@pytest.mark.parametrize("pixel_side", [8, 700], ids=["small", "700x700"])
@pytest.mark.parametrize("declared, implicit", [(ExplicitVRLittleEndian, True), (ImplicitVRLittleEndian, False)],
                         ids=["implicit-labelled-explicit", "explicit-labelled-implicit"])
def test_a_data_set_not_encoded_as_its_transfer_syntax_says_is_read_as_dcmread_reads_it(declared, implicit,
                                                                                         pixel_side, tiers):
    """Regression: the byte scan took such a data set at its word and answered empty values (the implicit
    file), or jumped by a VR read as a length into the pixel data (the explicit one)."""
    data, ds = mislabelled(declared, implicit, pixel_side)
    assert hierarchy(data) == expected(data) == (b"PAT-MIX", ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                 ds.SOPInstanceUID)
    assert tiers == ["_read"]


def test_a_file_that_ends_at_the_series_uid(tiers):
    data = part10(pixels=False, PatientID="PAT-END", StudyID=None, SeriesNumber=None, InstanceNumber=None)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert max(ds.keys()) == 0x0020000E
    assert hierarchy(data) == expected(data)
    assert hierarchy(data).PatientID == b"PAT-END"


@pytest.mark.parametrize("data", [b"", b"not a DICOM file" * 100, b"\0" * 128 + b"DICX" + b"\0" * 400, b"\0" * 130],
                         ids=["empty", "text", "other-prefix", "cut-in-prefix"])
def test_a_file_that_is_not_dicom_raises(data):
    with pytest.raises(Exception) as raised:
        hierarchy(data)
    assert not isinstance(raised.value, AssertionError)


def test_a_file_without_a_preamble_raises_as_dcmread_does():
    data = part10()
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(io.BytesIO(data[132:]))
    with pytest.raises(InvalidDicomError):
        hierarchy(data[132:])
