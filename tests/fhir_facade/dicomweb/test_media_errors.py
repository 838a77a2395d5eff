"""A ZIP that cannot start is a DICOMweb error, not a 500 or a broken stream (issue 15): the
first block of the ZIP is made before the answer starts (``media.zip_response``)."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

import fake_pacs
from facade_helpers import FAKE_PACS, bearer, token

STUDY = "1.2.826.0.1.3680043.8.498.5151"
RETRIEVAL = f"/studies/{STUDY}"


def pacs_answering(mock: responses.RequestsMock, retrieval: tuple[int, dict, bytes]) -> list:
    """The fake PACS, except that the study's retrieval answers *retrieval*; returns the paths asked."""
    asked = []

    def callback(request):
        path = urlsplit(request.url).path[len(urlsplit(FAKE_PACS).path):]
        asked.append(path)
        if path == RETRIEVAL:
            return retrieval
        return fake_pacs.answer(path, dict(parse_qsl(urlsplit(request.url).query)))

    mock.add_callback(responses.GET, re.compile(re.escape(FAKE_PACS) + r"(/.*)?(\?.*)?$"), callback=callback)
    return asked


def multipart(*bodies: bytes) -> tuple[int, dict, bytes]:
    boundary = "zip-error-boundary"
    payload = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                       + body + b"\r\n" for body in bodies) + f"--{boundary}--\r\n".encode()
    return 200, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}, payload


@pytest.mark.parametrize("retrieval, status", [
    (multipart(b"not a DICOM file at all" * 100), 502),
    (multipart(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00" + b"1.2" * 30), 502),
    ((404, {"Content-Type": "application/dicom+json"}, b"[]"), 404),  # as the multipart retrieval answers
    ((200, {"Content-Type": "application/json"}, b"{}"), 502),
])
def test_a_zip_that_cannot_start_is_a_dicomweb_error(fake_app, retrieval, status):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        asked = pacs_answering(mock, retrieval)
        answer = fake_app.test_client().get(
            f"/dicomweb/studies/{STUDY}", headers={**bearer(token(fake_app, patient=fake_pacs.PATIENT_ID)),
                                                   "Accept": "application/zip"})
    assert RETRIEVAL in asked
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json["status"] == status
    assert not answer.is_streamed
