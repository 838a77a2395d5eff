"""Review tests (a fresh reviewer's attacks). Review: hierarchy() gives what pydicom reads, for files whose first bytes could mislead a scan:
a nested (sequence item) PatientID / Study / Series Instance UID before the top-level ones, in
sequences of defined and undefined length; a private element holding bytes like a tag; each
transfer syntax; an Implicit VR data set labelled Explicit VR (and the reverse), which pydicom
reads by its actual encoding; values past the first 16 KiB; truncated files and garbage."""
from __future__ import annotations

import io
import os
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

import devpacs
import samples
from fhir_facade.dicom.hierarchy import HEAD_BYTES, Hierarchy, hierarchy

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


def expected(ds) -> Hierarchy:
    return Hierarchy(str(ds.PatientID).encode(), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                     str(ds.SOPInstanceUID))


def decoy(ds, undefined: bool) -> None:
    """A sequence before (0010,0020) whose item holds other keys, and a private tag-like value."""
    item = Dataset()
    item.PatientID, item.StudyInstanceUID, item.SeriesInstanceUID = "NESTED", "9.8.7", "9.8.7.6"
    item.SOPInstanceUID = "9.8.7.6.5"
    ds.ReferencedSeriesSequence = Sequence([item])  # (0008,1115)
    ds.ReferencedSeriesSequence.is_undefined_length = undefined
    item.is_undefined_length_sequence_item = undefined
    ds.add_new(0x00090010, "LO", "REVIEW")
    ds.add_new(0x00091001, "OB", b"\x20\x00\x0e\x00UI\x08\x001.2.3.4\x00" * 3)


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_nested_and_private_decoys_are_not_the_instances_keys(syntax, undefined):
    ds = samples.make_instance(transfer_syntax=syntax, PatientID="TOP-LEVEL")
    decoy(ds, undefined)
    assert hierarchy(devpacs.to_part10(ds)) == expected(ds)


def test_keys_past_the_first_bytes_are_found():
    ds = samples.make_instance(PatientID="FAR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(0x00080081, "ST", "x" * (2 * HEAD_BYTES))  # Institution Address, before (0010,0020)
        data = devpacs.to_part10(ds)
    assert hierarchy(data) == expected(ds)
    assert hierarchy(memoryview(data)) == expected(ds)


def mislabelled(label: str, implicit: bool) -> tuple[bytes, Dataset]:
    """A PS3.10 file whose File Meta says *label* but whose data set is encoded *implicit* or not."""
    ds = samples.make_instance(PatientID="MISLABELLED")
    ds.file_meta.TransferSyntaxUID = label
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit
    write_dataset(body, ds)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue(), ds


@pytest.mark.parametrize("label, implicit", [(ExplicitVRLittleEndian, True), (ImplicitVRLittleEndian, False)],
                         ids=["implicit-labelled-explicit", "explicit-labelled-implicit"])
def test_a_data_set_encoded_otherwise_than_its_label_says_is_read_as_pydicom_reads_it(label, implicit):
    data, ds = mislabelled(label, implicit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == ds.SOPInstanceUID
        assert hierarchy(data) == expected(ds)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_a_truncated_file_is_read_as_far_as_it_goes(syntax):
    ds = samples.make_instance(transfer_syntax=syntax, PatientID="CUT")
    data = devpacs.to_part10(ds)
    if syntax != DeflatedExplicitVRLittleEndian:  # a cut deflate stream is an error (zlib -5)
        assert hierarchy(data[:len(data) - 100]) == expected(ds)  # cut inside Pixel Data
    assert hierarchy(data[:200]) == Hierarchy(b"", "", "", "")  # cut in the File Meta: no data set, as pydicom


@pytest.mark.parametrize("data", [b"", os.urandom(4096), b"\0" * 128 + b"DICM" + b"\xff" * 64],
                         ids=["empty", "random", "prefix-then-garbage"])
def test_garbage_is_refused_or_has_no_keys(data):
    try:
        found = hierarchy(data)
    except Exception:
        return
    assert found == Hierarchy(b"", "", "", "")
