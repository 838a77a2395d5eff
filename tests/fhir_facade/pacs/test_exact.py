"""Unit tests of fhir_facade.pacs.exact: which QIDO-RS rows decide whose study it is."""
import pytest
import responses

from dicom_json_builders import ds
from facade_helpers import FAKE_PACS
from fhir_facade.dicom import dicom_json as dj
from fhir_facade.pacs.client import PacsClient
from fhir_facade.pacs.exact import ExactSource, could_be, is_exact, narrowing


@pytest.mark.parametrize("row, exact", [
    (ds(PatientID="Nandu-日本"), True),
    (ds(PatientID="Nandu-", SpecificCharacterSet="ISO_IR 100"), False),   # Latin-1 may have dropped
    (ds(PatientID="Nandu-", SpecificCharacterSet=None), False),           # the default repertoire too
    (ds(PatientID="A?"), False),                                          # a replacement character
    (ds(PatientID="A\ufffd"), False),
    (ds(PatientID="H32", PatientName={"Alphabetic": "Yamada", "Ideographic": ";3ED"}), False),
    (ds(PatientID="H31", PatientName={"Alphabetic": "Yamada", "Ideographic": "山田"}), True),
])
def test_a_row_is_exact_only_when_nothing_can_have_been_lost(row, exact):
    assert is_exact(row) is exact


@pytest.mark.parametrize("patient_id, sent", [
    ("P1", [("PatientID", "P1")]), ("Nandu-日本", []), ("a*b", []), ("a?", []), ("bs\\x", []),
    (" P1", []), ("P1 ", []), ("P1\t", []), ("", []), (None, []),
])
def test_only_plain_ascii_patient_ids_are_sent_to_the_pacs(patient_id, sent):
    assert narrowing(patient_id) == sent


@pytest.mark.parametrize("lossy, exact, possible", [
    ("Nandu-", "Nandu-日本", True), ("", "山田", True), ("ceyp", "Люкceмбypг", True), ("N?ndu", "Nandu", True),
    ("Nandu-", "bs", False), ("bs", "Nandu-日本", False), ("ab", "ba", False), ("Nandu-x", "Nandu-", False),
])
def test_could_be_is_removal_or_replacement_only(lossy, exact, possible):
    assert could_be(lossy, exact) is possible


@pytest.mark.parametrize("values, whole", [
    (["bs", "x"], "bs\\x"), ([None, None], "\\"), (["P1 "], "P1"), ([" P1"], " P1"), (["P1\t"], "P1\t"),
    ([""], None), ([], None),
])
def test_patient_id_is_the_whole_value(values, whole):
    assert dj.patient_id({"00100020": {"vr": "LO", "Value": values}}) == whole


STUDY = "1.2.3"


def metadata(*patients):
    return [ds(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.{n}", SOPInstanceUID=f"{STUDY}.{n}.1",
               PatientID=p, PatientName=f"Name{n}", StudyDescription="Люкс") for n, p in enumerate(patients, 1)]


@responses.activate
def test_a_lossy_row_takes_the_stored_values_of_the_one_patient_it_can_be():
    responses.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/metadata", json=metadata("Nandu-日本"))
    lossy = ds(StudyInstanceUID=STUDY, PatientID="Nandu-", StudyDescription="", SpecificCharacterSet="ISO_IR 100")
    [row] = ExactSource(PacsClient(FAKE_PACS)).confirm([lossy])
    assert dj.patient_id(row) == "Nandu-日本" and dj.text(row, "StudyDescription") == "Люкс"
    assert dj.values(row, "SpecificCharacterSet") == ["ISO_IR 192"]


@responses.activate
@pytest.mark.parametrize("stored", [("Nandu-日本", "Nandu-中国"), ("bs",), ()])
def test_a_lossy_row_that_metadata_cannot_tell_is_left_out(stored):
    """Two patients it could be, none it could be, or no metadata at all: refused, not guessed."""
    responses.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/metadata", json=metadata(*stored))
    lossy = ds(StudyInstanceUID=STUDY, PatientID="Nandu-", SpecificCharacterSet="ISO_IR 100")
    assert ExactSource(PacsClient(FAKE_PACS)).confirm([lossy]) == []


@responses.activate
def test_exact_rows_cost_no_request():
    rows = [ds(StudyInstanceUID=STUDY, PatientID="Nandu-日本")]
    assert ExactSource(PacsClient(FAKE_PACS)).confirm(rows) == rows
    assert len(responses.calls) == 0
