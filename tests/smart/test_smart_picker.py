"""Patient picker helpers: search text cleaning (smart/web/picker.py); QIDO-RS queries, matching, display
(fhir_facade/fhir/picker.py, the PACS side registered with smart)."""
from __future__ import annotations

import pytest

from fhir_facade.fhir import picker as pacs_picker
from smart.web import picker


@pytest.mark.parametrize("raw, cleaned", [
    (None, ""),
    ("  doe  ", "doe"),
    ("do*e", "do e"),
    ("a?b\\c^d=e", "a b c d e"),
    ("x" * 100, "x" * picker.QUERY_MAX),
])
def test_clean_query_drops_qido_wildcards(raw, cleaned):
    assert picker.clean_query(raw) == cleaned


def test_matching_keys():
    assert pacs_picker._matching_keys("") == [[("limit", str(pacs_picker.STUDY_LIMIT))]]
    keys = pacs_picker._matching_keys("doe jo")
    assert [("PatientName", "*doe*jo*"), ("limit", str(pacs_picker.STUDY_LIMIT))] in keys
    assert not any(k == "PatientID" for q in keys for k, _ in q)  # an id has no spaces
    assert [("PatientID", "DEMO-0001"), ("limit", str(pacs_picker.STUDY_LIMIT))] in pacs_picker._matching_keys("DEMO-0001")


@pytest.mark.parametrize("query, hit", [
    ("demo", True), ("DEMO-0001", True), ("patient demo", True), ("demo patient", True),
    ("émo", True), ("0002", False), ("doe", False),
])
def test_matches_words_in_id_or_name(query, hit):
    assert pacs_picker._matches(query, "DEMO-0001", "Patient Demo") is hit


def test_date_for_display():
    assert pacs_picker._date("19650412") == "1965-04-12"
    assert pacs_picker._date("1965") == "1965"
    assert pacs_picker._date(None) is None
