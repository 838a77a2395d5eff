"""Issue 13: PACS requests are labelled by DICOMweb operation kind (PS3.18), never by URL."""
from __future__ import annotations

import io
import socket

import pytest
import requests

from fhir_facade.pacs.client import broken_answer
from fhir_facade.pacs.metrics import OPERATIONS, PACS_ERRORS, operation


@pytest.mark.parametrize("path, kind", [
    ("studies", "search"),
    ("/dicom-web/studies?StudyInstanceUID=2.25.0&limit=1", "search"),
    ("studies/1.2/series", "search"),
    ("studies/1.2/instances", "search"),
    ("studies/1.2/series/1.3/instances", "search"),
    ("studies/1.2/metadata", "metadata"),
    ("studies/1.2/series/1.3/instances/1.4/metadata", "metadata"),
    ("studies/1.2", "retrieve"),
    ("studies/1.2/series/1.3", "retrieve"),
    ("/dicom-web/studies/1.2/series/1.3/instances/1.4/", "retrieve"),
    ("studies/1.2/series/1.3/instances/1.4/frames/1,2,3", "frames"),
    ("studies/1.2/series/1.3/instances/1.4/frames/1/rendered", "rendered"),
    ("studies/1.2/rendered", "rendered"),
    ("studies/1.2/series/1.3/thumbnail", "thumbnail"),
    ("studies/1.2/series/1.3/instances/1.4/bulk/7fe00010", "bulkdata"),
    ("studies/1.2/series/1.3/instances/1.4/bulkdata/7fe00010", "bulkdata"),
    ("", "retrieve"),
])
def test_operation_kind_of_a_pacs_path(path, kind):
    assert operation(path) == kind
    assert kind in OPERATIONS


@pytest.mark.parametrize("exc, error, status", [
    (socket.timeout("timed out"), "timeout", 504),
    (ConnectionResetError("reset"), "invalid", 502),
])
def test_a_body_broken_off_while_relaying_is_counted_under_its_operation(exc, error, status):
    """The relay reads streamed bodies itself and reports failures through broken_answer."""
    response = requests.Response()
    response.raw = io.BytesIO(b"partial")
    response.request = requests.Request("GET", "http://pacs.test/dicom-web/studies/1.2/series/1.3/metadata").prepare()
    counter = PACS_ERRORS.labels("metadata", error)
    before = counter._value.get()
    assert broken_answer(response, exc).status == status
    assert counter._value.get() == before + 1
