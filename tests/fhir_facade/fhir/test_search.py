"""Tests for FHIR search parsing (fhir_facade.fhir.search)."""
import pytest

from dicom_json_builders import ds
from fhir_facade.fhir.outcomes import BadSearch
from fhir_facade.fhir.search import date_predicate, is_uid, parse_study_search

DATES = ["2020-12-31", "2021-01-15", "2021-01-16"]


@pytest.mark.parametrize("value, expected", [
    ("le2021-01-15", ["2020-12-31", "2021-01-15"]),
    ("ge2021-01-15", ["2021-01-15", "2021-01-16"]),
    ("2021-01-15", ["2021-01-15"]),
    ("eq2021-01-15", ["2021-01-15"]),
    ("ne2021-01-15", ["2020-12-31", "2021-01-16"]),
    ("lt2021-01-15", ["2020-12-31"]),
    ("gt2021-01-15", ["2021-01-16"]),
    ("sa2021-01-15", ["2021-01-16"]),
    ("eb2021-01-15", ["2020-12-31"]),
    ("2021", ["2021-01-15", "2021-01-16"]),
    ("2021-01", ["2021-01-15", "2021-01-16"]),
    ("ge2021-01-15T12:00:00Z", ["2021-01-15", "2021-01-16"]),
])
def test_field_case_fh1_date_prefixes(value, expected):
    match, _ = date_predicate(value, "UTC")
    assert [d for d in DATES if match(d)] == expected


def test_date_with_time_and_offset():
    match, _ = date_predicate("ge2024-01-05T15:00:00Z", "UTC")
    assert match("2024-01-05T10:15:00-05:00")       # 15:15Z
    assert not match("2024-01-05T09:15:00-05:00")   # 14:15Z
    assert not match(None)


@pytest.mark.parametrize("bad", ["2021-13-01", "x2021", "2021-1-5", "le", "2021-01-15T25:00", ""])
def test_malformed_dates_are_bad_searches(bad):
    with pytest.raises(BadSearch):
        date_predicate(bad, "UTC")


@pytest.mark.parametrize("uid, ok", [("1.2.3", True), ("1.2.03", False), ("1..2", False), ("a.b", False),
                                     ("1" * 65, False), ("0.0", True), ("../etc", False)])
def test_is_uid(uid, ok):
    assert is_uid(uid) is ok


def test_identifier_forms():
    study = ds(StudyInstanceUID="1.2.3", AccessionNumber="A123")
    other = ds(StudyInstanceUID="1.2.4", AccessionNumber="B9")
    for value in ("urn:dicom:uid|urn:oid:1.2.3", "urn:oid:1.2.3", "A123", "|A123", "urn:dicom:uid|1.2.3"):
        search = parse_study_search([("identifier", value)], "UTC")
        assert [f(study) for f in search.study_filters] == [True], value
        assert [f(other) for f in search.study_filters] == [False], value
    search = parse_study_search([("identifier", "http://other|A123")], "UTC")
    assert search.study_filters[0](study) is False


def test_patient_reference_forms_and_qido():
    for value in ("P1", "Patient/P1", "https://facade.example/fhir/Patient/P1"):
        search = parse_study_search([("patient", value)], "UTC")
        assert search.patient == "P1"
        assert ("PatientID", "P1") in search.qido
    search = parse_study_search([("subject", "dcm-a.2Fb")], "UTC")
    assert ("PatientID", "a/b") in search.qido


@pytest.mark.parametrize("params", [[("patient", "a b")], [("_id", "not-a-uid")], [("_count", "x")],
                                    [("identifier", "urn:oid:1..2")], [("_summary", "full")],
                                    [("_count", "-1")], [("_offset", "x")], [("modality:not", "CT")],
                                    [("series", "1.2.x")], [("status", "done")], [("_elements", "a b")],
                                    [("_summary", "true"), ("_elements", "series")]])
def test_malformed_values_are_bad_searches(params):
    with pytest.raises(BadSearch):
        parse_study_search(params, "UTC")


def test_unknown_parameters_ignored_unless_strict():
    search = parse_study_search([("patient", "P1"), ("foo", "bar")], "UTC")
    assert ("foo", "bar") not in search.echo and ("patient", "P1") in search.echo
    with pytest.raises(BadSearch):
        parse_study_search([("foo", "bar")], "UTC", strict=True)


@pytest.mark.parametrize("value, qido, matches_2021", [
    ("9999-12-31", ("99991230", "99991231"), False), ("ge9999-12-31", ("99991230", ""), False),
    ("0001", ("00010101", "00020102"), False), ("lt0001-01-01", ("", "00010103"), False),
    ("sa9999", ("99981231", ""), False), ("ge0001", ("00010101", ""), True), ("le9999-12-31", ("", "99991231"), True),
])
def test_dates_at_the_ends_of_the_calendar(value, qido, matches_2021):
    match, coarse = date_predicate(value, "UTC")
    assert coarse == qido
    assert match("2021-01-15") is matches_2021
    assert match("9999-12-31") is (value in ("9999-12-31", "ge9999-12-31", "le9999-12-31", "ge0001"))
