"""Tests for the PACS client's own pieces (fhir_facade.pacs.client)."""
import email.parser
import http.client
import io

import pytest

from fhir_facade.pacs.client import _parse_headers


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


class _OneShotServer:
    """A loopback TCP server that answers each request with *reply* (bytes, or None for silence,
    or b"" to close at once); counts the requests it read."""

    def __init__(self, reply, then_close=True):
        import socket
        import threading
        self.reply, self.then_close, self.requests, self.open = reply, then_close, 0, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/dicom-web"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if conn.recv(65536):
                self.requests += 1
            if self.reply is None:
                self.open.append(conn)  # say nothing, keep it open
                continue
            conn.sendall(self.reply)
            if self.then_close:
                conn.close()
            else:
                self.open.append(conn)

    def close(self):
        self.listener.close()
        for conn in self.open:
            conn.close()


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 100\r\n\r\n[{"


@pytest.mark.parametrize("reply, then_close, error, status, requests", [
    (None, True, "PacsTimeout", 504, 1),  # accepted, then silent: not retried (review)
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: 1\r\n" * 101 + b"\r\n", True, "PacsError", 502, 2),  # over 100 headers
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", True, "PacsError", 502, 2),  # a 64 KiB line
    (b"", True, "PacsUnavailable", 503, 2),  # closed without an answer: retried once
    (JSON_HEAD, False, "PacsTimeout", 504, 1),  # headers and two bytes of the body, then silence
    (JSON_HEAD, True, "PacsError", 502, 1),  # headers and two of 100 bytes, then closed
])
def test_what_a_pacs_failure_becomes(reply, then_close, error, status, requests):
    """A silent PACS is a timeout (504) after one wait, not a retried one reported as down (503);
    an answer that is not HTTP, or a body cut short, is a bad answer (502: it was a 500 when the
    body failed, read outside get()); a closed connection is unavailable (503) (review)."""
    import fhir_facade.pacs.client as pacs
    server = _OneShotServer(reply, then_close=then_close)
    try:
        with pytest.raises(pacs.PacsError) as raised:
            pacs.PacsClient(server.url, timeout=0.5).qido("studies")
    finally:
        server.close()
    assert type(raised.value).__name__ == error and raised.value.status == status
    assert server.requests == requests


def test_a_streamed_body_is_left_to_the_caller():
    import fhir_facade.pacs.client as pacs
    server = _OneShotServer(JSON_HEAD, then_close=False)
    try:
        response = pacs.PacsClient(server.url, timeout=0.5).get("studies", stream=True)
        assert response.status_code == 200 and response.raw.read(2) == b"[{"
        response.close()
    finally:
        server.close()


@pytest.mark.parametrize("failure, error, attempts", [
    (TimeoutError("timed out"), "PacsTimeout", 1),  # the handshake never completes: one wait (review)
    (ConnectionRefusedError(111, "Connection refused"), "PacsUnavailable", 3),  # connect=2: a PACS restarting
])
def test_connecting(monkeypatch, failure, error, attempts):
    """A connect timeout is final; a refused connection is retried twice (urllib3's
    NewConnectionError is a ConnectTimeoutError too, and had become final with it: review)."""
    import fhir_facade.pacs.client as pacs
    tried = []

    def connect(address, timeout=None, *args, **kw):
        tried.append(address)
        raise failure

    monkeypatch.setattr("urllib3.util.connection.create_connection", connect)
    with pytest.raises(pacs.PacsError) as raised:
        pacs.PacsClient("http://127.0.0.1:9/dicom-web", timeout=0.5).get("studies")
    assert type(raised.value).__name__ == error and len(tried) == attempts


def test_a_pacs_that_is_down_leaves_no_patient_id_in_the_log(tmp_path, caplog):
    """urllib3 logs each retry with the request line, whose query holds the PatientID: none of
    it reaches the log (review of issue 14: the consent page's picker on a PACS that is down)."""
    import logging
    import socket

    from facade_helpers import bearer, make_app, token

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(tmp_path, FACADE_PACS_URL=f"http://127.0.0.1:{port}/dicom-web")
    patient = "SECRET-PID-4711"
    with caplog.at_level(logging.DEBUG):
        answer = app.test_client().get("/fhir/ImagingStudy", query_string={"patient": patient},
                                       headers=bearer(token(app, patient=patient)))
    assert answer.status_code == 503
    assert answer.get_json()["resourceType"] == "OperationOutcome"
    assert patient not in caplog.text
    assert "PatientID" not in caplog.text
