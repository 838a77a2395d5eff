"""The one-pass DICOMDIR writer: what pydicom's FileSet writes, record for record, and read back
by FileSet with every offset followed."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

import devpacs
import samples
from fhir_facade.dicom.dicomdir import Dicomdir, UnsupportedInstance, write_dicomdir
from fhir_facade.dicom.hierarchy import hierarchy
from fhir_facade.dicomweb.media import Names

#: Record elements compared with FileSet's (the offsets are compared as the links they encode).
OFFSETS = {"OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity"}


#: PS3.10 files of the instances made here, by SOP Instance UID.
FILES: dict[str, bytes] = {}


def stored(**attrs) -> pydicom.Dataset:
    """An instance as read back from its PS3.10 file, header only."""
    data = devpacs.to_part10(samples.make_instance(**attrs))
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    FILES[header.SOPInstanceUID] = data
    return header


@pytest.fixture
def instances():
    """Two patients, three studies, series and instances out of order, two transfer syntaxes
    and a character set: the tree FileSet builds for them has every kind of sibling."""
    studies = [generate_uid() for _ in range(3)]
    series = [generate_uid() for _ in range(4)]
    plan = [("A", 0, 0, 1), ("A", 0, 1, 1), ("B", 1, 2, 1), ("A", 0, 0, 2), ("A", 2, 3, 1), ("A", 0, 1, 2)]
    headers = []
    for n, (patient, study, serie, number) in enumerate(plan):
        attrs = dict(PatientID=patient, StudyInstanceUID=studies[study], SeriesInstanceUID=series[serie],
                     InstanceNumber=number, Modality="CT" if serie % 2 else "MR")
        if n == 2:
            attrs.update(transfer_syntax=ImplicitVRLittleEndian, SpecificCharacterSet="ISO_IR 100",
                         PatientName="Müller^Jürgen")
        headers.append(stored(**attrs))
    names = Names()
    return headers, [names.file_id(hierarchy(FILES[header.SOPInstanceUID])) for header in headers]


def records(file_set_ds: pydicom.Dataset) -> list[dict]:
    """Each record's elements (offsets apart) and, for the offsets, the index of the record
    they point to: the structure, whatever the bytes before the sequence."""
    items = list(file_set_ds.DirectoryRecordSequence)
    at = {item.seq_item_tell: index for index, item in enumerate(items)}
    out = []
    for item in items:
        elements = {e.keyword: e.value for e in item if e.keyword not in OFFSETS}
        elements["next"] = at.get(item.OffsetOfTheNextDirectoryRecord)
        elements["lower"] = at.get(item.OffsetOfReferencedLowerLevelDirectoryEntity)
        out.append(elements)
    return out


def test_the_records_are_filesets(instances, tmp_path):
    headers, file_ids = instances
    ours = pydicom.dcmread(io.BytesIO(write_dicomdir(headers, file_ids, file_set_id="FACADE")))

    file_set = FileSet()
    file_set.ID = "FACADE"
    for header in headers:
        file_set.add(header)
    file_set.write(tmp_path)
    theirs = pydicom.dcmread(tmp_path / "DICOMDIR")

    assert records(ours) == records(theirs)
    assert len(ours.DirectoryRecordSequence) == 2 + 3 + 4 + 6
    assert ours.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ours.FileSetID == "FACADE"
    assert ours.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == \
        theirs.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity


def read_back(data: bytes, folder, headers=(), file_ids=()) -> FileSet:
    """FileSet over the DICOMDIR in *folder* with the instances' files (it lists only the
    records whose files it finds)."""
    (folder / "DICOMDIR").write_bytes(data)
    for header, file_id in zip(headers, file_ids):
        path = folder.joinpath(*file_id.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(FILES[header.SOPInstanceUID])
    return FileSet(pydicom.dcmread(folder / "DICOMDIR"))


def test_fileset_reads_it_back_listing_every_instance_where_it_is(instances, tmp_path):
    headers, file_ids = instances
    file_set = read_back(write_dicomdir(headers, file_ids), tmp_path, headers, file_ids)
    listed = {i.SOPInstanceUID: (i.FileID.replace("\\", "/"), i.TransferSyntaxUID) for i in file_set}
    assert listed == {h.SOPInstanceUID: (f, h.file_meta.TransferSyntaxUID) for h, f in zip(headers, file_ids)}
    assert file_set.find(PatientID="B")[0].SOPInstanceUID == headers[2].SOPInstanceUID


def test_an_empty_file_set_and_an_instance_added_twice(instances, tmp_path):
    headers, file_ids = instances
    assert len(read_back(Dicomdir().encode(), tmp_path)) == 0
    directory = Dicomdir()
    directory.add(headers[0], file_ids[0])
    directory.add(headers[0], file_ids[0])
    assert [i.SOPInstanceUID for i in read_back(directory.encode(), tmp_path, headers[:1], file_ids[:1])] == [headers[0].SOPInstanceUID]


def test_single_level_records_are_left_to_fileset():
    from pydicom.uid import HangingProtocolStorage
    header = stored(SOPClassUID=HangingProtocolStorage, pixels=False)
    with pytest.raises(UnsupportedInstance):
        Dicomdir().add(header, "PT000000/ST000000/SE000000/IM000000")


def test_a_missing_required_element_is_a_value_error():
    header = stored(InstanceNumber=None)
    with pytest.raises(ValueError, match="Instance Number"):
        Dicomdir().add(header, "PT000000/ST000000/SE000000/IM000000")
