"""Tests for the PatientID <-> Patient.id rule (fhir_facade.dicom.patient_ids)."""
import re

import pytest

from fhir_facade.dicom.patient_ids import InvalidPatientId, hashed_id, to_fhir_id, to_patient_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@pytest.mark.parametrize("patient_id", ["1CT1", "4MR1", "ID1", "id11111", "a.b", "A-1", "x" * 64])
def test_valid_fhir_ids_map_to_themselves(patient_id):
    assert to_fhir_id(patient_id) == patient_id
    assert to_patient_id(patient_id) == patient_id


@pytest.mark.parametrize("patient_id, expected", [
    ("12 34", "dcm-12.2034"),
    ("a/b+c", "dcm-a.2Fb.2Bc"),
    ("a_b", "dcm-a.5Fb"),
    ("Ünï", "dcm-.C3.9Cn.C3.AF"),
    ("", "dcm-"),
    ("dcm-x", "dcm-dcm-x"),
    ("dcm-", "dcm-dcm-"),
    ("x.y z", "dcm-x.2Ey.20z"),
    ("h_2024_0042", "dcm-.68.5F2024.5F0042"),  # never dcm-h. (the one-way form), which it read as
    ("h 2850f8259585eb7a3b3ca1ac90e8e0", "dcm-.68.202850f8259585eb7a3b3ca1ac90e8e0"),
    ("hx y", "dcm-hx.20y"),
])
def test_other_patient_ids_are_escaped_reversibly(patient_id, expected):
    assert to_fhir_id(patient_id) == expected
    assert to_patient_id(expected) == patient_id


@pytest.mark.parametrize("patient_id", ["山田^太郎", "  leading", "tab\tid", "ÄÖÜ" * 3, "x" * 65, "/" * 10,
                                        "Wang^XiaoDong=王^小東", "é" * 30])
def test_every_patient_id_yields_a_valid_fhir_id(patient_id):
    fhir_id = to_fhir_id(patient_id)
    assert FHIR_ID.fullmatch(fhir_id)
    back = to_patient_id(fhir_id)
    assert back == patient_id or (back is None and fhir_id == hashed_id(patient_id))


def test_too_long_escapes_become_a_one_way_hash():
    patient_id = "é" * 40
    fhir_id = to_fhir_id(patient_id)
    assert fhir_id.startswith("dcm-h.") and len(fhir_id) == 38
    assert to_patient_id(fhir_id) is None


@pytest.mark.parametrize("bad", ["", "a b", "dcm-.2", "dcm-.41", "dcm-a.zz", "dcm-h.xyz", "x" * 65, "dcm-.FF"])
def test_ids_this_server_never_issues_are_refused(bad):
    with pytest.raises(InvalidPatientId):
        to_patient_id(bad)


def test_no_patient_id_gets_another_patient_ids_one_way_id():
    """Rule 2 never writes dcm-h.: a PatientID chosen to look like a hash cannot take a patient's id."""
    victim = "VICTIM^LONG/PATIENT ID FROM HOSPITAL A 000247 WITH MANY ESCAPED CHARS"
    one_way = to_fhir_id(victim)
    assert one_way.startswith("dcm-h.") and to_patient_id(one_way) is None
    forged = "h" + chr(int(one_way[6:8], 16)) + one_way[8:]
    assert to_fhir_id(forged) != one_way and to_patient_id(to_fhir_id(forged)) == forged
    for byte in range(1, 128):
        patient_id = "h" + chr(byte) + "0" * 30
        fhir_id = to_fhir_id(patient_id)
        assert not fhir_id.startswith("dcm-h.") or fhir_id == hashed_id(patient_id)
        assert to_patient_id(fhir_id) in (patient_id, None)
