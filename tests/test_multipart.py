"""Tests for the streaming multipart rewriter (fhir_facade.multipart)."""
import hashlib

import pytest

import samples
import devpacs
from fhir_facade.multipart import MultipartError, rewrite, transfer_syntax_of, unwrap


def body_of(parts, boundary="b0undary", headers=True):
    out = b""
    for data in parts:
        out += f"--{boundary}\r\n".encode()
        if headers:
            out += f"Content-Type: application/dicom\r\nContent-Length: {len(data)}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def chunked(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


TRICKY = [b"\r\n--b0undar", b"--b0undary-not-at-line-start", b"", b"\r\n\r\n", bytes(range(256)) * 40]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 64, 1000, 1 << 20])
def test_identity_rewrite_is_byte_exact_for_any_chunking(size):
    body = body_of(TRICKY)
    out = b"".join(rewrite(chunked(body, size), "b0undary", lambda h, s: h, peek=lambda h: True))
    assert out == body


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_unwrap_gives_the_first_part(size):
    headers, body = unwrap(chunked(body_of(TRICKY), size), "b0undary")
    assert b"".join(body) == TRICKY[0]
    assert dict(headers)["Content-Length"] == str(len(TRICKY[0]))


def test_headers_are_rewritten_bodies_kept():
    body = body_of([b"one", b"two"])
    out = b"".join(rewrite([body], "b0undary", lambda h, s: [("Content-Type", "x/y")]))
    assert out == body.replace(b"Content-Type: application/dicom\r\nContent-Length: 3\r\n", b"Content-Type: x/y\r\n")


def test_transfer_syntax_is_read_from_file_meta():
    ds = samples.make_instance(transfer_syntax="1.2.840.10008.1.2.1")
    data = devpacs.to_part10(ds)
    assert transfer_syntax_of(data) == "1.2.840.10008.1.2.1"
    assert transfer_syntax_of(data[:100]) is None
    assert transfer_syntax_of(b"\0" * 200) is None
    seen = []
    out = b"".join(rewrite(chunked(body_of([data]), 37), "b0undary",
                           lambda h, s: seen.append(transfer_syntax_of(s)) or h, peek=lambda h: True))
    assert seen == ["1.2.840.10008.1.2.1"]
    assert hashlib.sha256(out).digest() == hashlib.sha256(body_of([data])).digest()


@pytest.mark.parametrize("bad", [b"no boundary at all", b"--b0undary\r\nContent-Type: x\r\n\r\nbody without end",
                                 b"--b0undary\r\n" + b"X" * 20000])
def test_malformed_bodies_raise(bad):
    with pytest.raises(MultipartError):
        b"".join(rewrite([bad], "b0undary", lambda h, s: h))
