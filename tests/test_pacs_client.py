"""Tests for the PACS client's own pieces (fhir_facade.pacs)."""
import email.parser
import http.client
import io

import pytest

from fhir_facade.pacs import _parse_headers


def _by_the_mime_parser(block: bytes) -> http.client.HTTPMessage:
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(
        block.decode("iso-8859-1"), headersonly=True)


@pytest.mark.parametrize("block", [
    # what Orthanc sends
    b"Connection: keep-alive\r\nContent-Type: multipart/related; type=\"application/octet-stream\"; "
    b"boundary=2b1c\r\nContent-Length: 524952\r\n\r\n",
    # repeated fields, blanks around values, an empty value, bare LF line ends
    b"Warning: 299 pacs \"one\"\r\nWarning:   299 pacs \"two\"  \r\nX-Empty:\r\nVary:\tAccept\n\n",
    # lines the fast path leaves to the MIME parser: folded, no colon, space before the colon, Latin-1
    b"X-Folded: first\r\n second\r\nContent-Type: text/plain\r\n\r\n",
    b"Content-Type: text/plain\r\nnot a header line\r\nX-After: 1\r\n\r\n",
    b"Content-Type : text/plain\r\n\r\n",
    b"X-Name: Gr\xfc\xdfe\r\n\r\n",
    # a carriage return inside a line is a line end to the MIME parser (review)
    b'ETag: "x"\rSet-Cookie: a=b\r\n\r\n',
    b"X-A: b\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"X-A: b\r\r\n\r\n",
    b"\r\n",
])
def test_response_headers_read_as_the_mime_parser_reads_them(block):
    """Same fields, values, order and defects as http.client's own header parsing."""
    fast = _parse_headers(io.BytesIO(block + b"body that must stay unread"))
    slow = _by_the_mime_parser(block)
    assert fast.items() == slow.items()
    assert fast.get_payload() == slow.get_payload()
    assert [type(d) for d in fast.defects] == [type(d) for d in slow.defects]
    assert isinstance(fast, http.client.HTTPMessage)


def test_response_headers_keep_repeated_fields_in_order():
    fast = _parse_headers(io.BytesIO(b"Warning: 299 a \"x\"\r\nContent-Length: 3\r\nWarning: 299 b \"y\"\r\n\r\nabc"))
    assert fast.get_all("Warning") == ['299 a "x"', '299 b "y"']
    assert fast["content-length"] == "3"


def test_response_headers_leave_the_body_unread():
    fp = io.BytesIO(b"Content-Length: 3\r\n\r\nabc")
    _parse_headers(fp)
    assert fp.read() == b"abc"
