"""Tests for the streaming multipart rewriter (fhir_facade.dicomweb.multipart)."""
import hashlib
import io

import pytest

import samples
import devpacs
from fhir_facade.dicomweb.multipart import BODY_READ, HEADER_READ, MultipartError, rewrite, transfer_syntax_of, unwrap


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


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "delimiter-search"])
@pytest.mark.parametrize("size", [1, 2, 5, 13, 64, 1000, 1 << 20])
def test_identity_rewrite_is_byte_exact_for_any_chunking(size, with_length):
    body = body_of(TRICKY, headers=with_length)
    out = b"".join(rewrite(chunked(body, size), "b0undary", lambda h, s: h, peek=lambda h: True))
    assert out == body


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_unwrap_gives_the_first_part(size):
    headers, start, body = unwrap(chunked(body_of(TRICKY), size), "b0undary")
    assert start == b""
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


class RecordingReader:
    """A ``read(n)`` source over *data* that records what was asked and what was returned."""

    def __init__(self, data: bytes):
        self.stream = io.BytesIO(data)
        self.asked: list[int] = []
        self.returned: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        self.asked.append(size)
        data = self.stream.read(size)
        self.returned.append(data)
        return data


def test_a_part_with_content_length_is_read_by_count_and_passed_on_as_read():
    bodies = [bytes([n]) * (3 * BODY_READ // 2 + n) for n in range(3)]
    body = body_of(bodies)
    reader = RecordingReader(body)
    out = list(rewrite(reader, "b0undary", lambda h, s: h))
    assert b"".join(out) == body
    # Past the first few KB of each part (read along with its headers), the body is asked
    # for by count: a full BODY_READ, then exactly what is left of the part.
    big_reads = [n for n in reader.asked if n != HEADER_READ]
    header_block = len(b"\r\n--b0undary\r\nContent-Type: application/dicom\r\nContent-Length: 1572864\r\n\r\n")
    assert big_reads[:2] == [BODY_READ, len(bodies[0]) - (HEADER_READ - header_block + 2) - BODY_READ]
    # ... and what was read is what is sent: the very same objects.
    sent = {id(chunk) for chunk in out}
    assert all(id(chunk) in sent for chunk in reader.returned if len(chunk) == BODY_READ)


@pytest.mark.parametrize("claimed", [99, 101, 0, 5000])
def test_a_part_whose_content_length_is_wrong_raises(claimed):
    body = body_of([b"x" * 100]).replace(b"Content-Length: 100", f"Content-Length: {claimed}".encode())
    with pytest.raises(MultipartError):
        b"".join(rewrite(io.BytesIO(body).read, "b0undary", lambda h, s: h))


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "\u00b2", ""])
def test_a_content_length_that_is_not_a_number_falls_back_to_the_delimiter(value):
    body = body_of([b"x" * 100]).replace(b"Content-Length: 100", f"Content-Length: {value}".encode("latin-1"))
    assert b"".join(rewrite(io.BytesIO(body).read, "b0undary", lambda h, s: h)) == body


def test_the_peeked_start_of_a_counted_part_is_its_first_bytes():
    data = devpacs.to_part10(samples.make_instance(transfer_syntax="1.2.840.10008.1.2.1"))
    seen = []
    out = b"".join(rewrite(io.BytesIO(body_of([data, b"tiny"])).read, "b0undary",
                           lambda h, s: seen.append(s) or h, peek=lambda h: True))
    assert out == body_of([data, b"tiny"])
    assert seen == [data[:4096], b"tiny"]


def test_unwrap_peeks_at_the_start_when_asked():
    data = devpacs.to_part10(samples.make_instance(transfer_syntax="1.2.840.10008.1.2.1"))
    headers, start, body = unwrap(io.BytesIO(body_of([data, b"second"])).read, "b0undary", peek=lambda h: True)
    assert start == data[:4096] and transfer_syntax_of(start) == "1.2.840.10008.1.2.1"
    assert b"".join(body) == data


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "delimiter-search"])
@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
def test_merge_makes_one_part_of_every_body_in_order(size, with_length):
    """The frames of an instance as one Pixel Data value: first part's headers, all bodies, no delimiters."""
    body = body_of(TRICKY, headers=with_length)
    drop = lambda h, s: [(n, v) for n, v in h if n != "Content-Length"]  # noqa: E731
    out = b"".join(rewrite(chunked(body, size), "b0undary", drop, peek=lambda h: True, merge=True,
                           out_boundary="own"))
    header = b"Content-Type: application/dicom\r\n" if with_length else b""
    assert out == b"--own\r\n" + header + b"\r\n" + b"".join(TRICKY) + b"\r\n--own--\r\n"
    headers, start, merged = unwrap(chunked(body, size), "b0undary", peek=lambda h: True, merge=True)
    assert b"".join(merged) == b"".join(TRICKY)
    assert start == TRICKY[0][:len(start)]


def _replace_second(headers, start):
    """Replace the part starting with b"two" by its upper-case body (the transcoding hook's shape)."""
    if not start.startswith(b"two"):
        return None
    return lambda body: ([("Content-Type", "application/dicom"), ("Content-Length", str(len(body)))], body.upper())


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "delimiter-search"])
@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
def test_replace_sends_a_part_read_whole_in_place_of_the_original(with_length, size):
    parts = [b"one" * 1000, b"two" * 5000, b"three"]
    body = body_of(parts, headers=with_length)
    sent = b"".join(rewrite(io.BytesIO(body).read if size == 1 << 20 else chunked(body, size), "b0undary",
                            lambda headers, start: headers, peek=lambda headers: True, replace=_replace_second))
    assert sent.count(b"TWO" * 5000) == 1 and b"two" not in sent
    assert sent.endswith(b"three\r\n--b0undary--\r\n")


def test_a_failing_replacement_ends_the_answer_after_the_last_whole_part():
    def failing(headers, start):
        if start.startswith(b"two"):
            def finish(body):
                raise ValueError("damaged")
            return finish
        return None
    sent = []
    with pytest.raises(ValueError):
        for chunk in rewrite(io.BytesIO(body_of([b"one", b"two", b"three"])).read, "b0undary",
                             lambda headers, start: headers, peek=lambda headers: True, replace=failing):
            sent.append(chunk)
    assert b"".join(sent).endswith(b"\r\n\r\none")  # the first part whole; nothing of the second, no close


def test_a_part_to_replace_is_read_whole_only_up_to_the_limit():
    with pytest.raises(MultipartError, match="longer than"):
        list(rewrite(io.BytesIO(body_of([b"two" * 1000])).read, "b0undary", lambda headers, start: headers,
                     peek=lambda headers: True, replace=_replace_second, max_replaced=1000))
