"""multipart.each_part_into: each part body whole, those with a Content-Length read into the caller's memory
(by the body's reader, or straight by a ``readinto`` of the same source), however the body is cut; a body that
is not what its framing says raises MultipartError."""
from __future__ import annotations

import io

import pytest

from fhir_facade.dicomweb.multipart import MultipartError, each_part_into

BOUNDARY = "B0undary"
#: Part bodies with what a delimiter search must not be fooled by (a near-delimiter at the very end).
PARTS = [b"first\r\n--not-the-boundary", b"", b"x" * 100_000, bytes(range(256)) * 40 + b"\r\n--B0undar", b"last"]
CUTS = [1, 7, 4096, None]  # None: the whole body at once


def body_of(parts, lengths, boundary=BOUNDARY) -> bytes:
    """A multipart/related body; ``lengths[i]`` is the Content-Length stated for part i (None: none)."""
    out = b""
    for data, length in zip(parts, lengths):
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n".encode()
        if length is not None:
            out += f"Content-Length: {length}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def chunks(body: bytes, cut: int | None) -> list[bytes]:
    cut = cut or len(body)
    return [body[i:i + cut] for i in range(0, len(body), cut)]


class Source:
    """One body read by ``read(n)`` and ``readinto(view)`` in turn, never more than *cut* bytes a call."""

    def __init__(self, body: bytes, cut: int | None):
        self.file, self.cut = io.BytesIO(body), cut or len(body) or 1
        self.read_into = 0

    def read(self, size: int) -> bytes:
        return self.file.read(min(size, self.cut))

    def readinto(self, view: memoryview) -> int:
        count = self.file.readinto(view[:self.cut])
        self.read_into += count
        return count


class Space:
    """``space(length)``: fresh memory, each length asked and each buffer given recorded."""

    def __init__(self):
        self.asked, self.given = [], []

    def __call__(self, length: int) -> memoryview:
        self.asked.append(length)
        self.given.append(memoryview(bytearray(length)))
        return self.given[-1]


#: Which parts state their Content-Length: all, none, every other one.
FRAMINGS = {"all": [True] * 5, "none": [False] * 5, "mixed": [True, False, True, False, True]}


def parse(body: bytes, cut, how: str, space) -> tuple[list, Source | None]:
    if how == "chunks":
        return list(each_part_into(chunks(body, cut), BOUNDARY, space)), None
    source = Source(body, cut)
    return list(each_part_into(source.read, BOUNDARY, space, source.readinto if how == "readinto" else None)), source


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("how", ["chunks", "read", "readinto"])
def test_each_part_whole_in_the_space_given_for_its_content_length(framing, cut, how):
    stated = FRAMINGS[framing]
    body = body_of(PARTS, [len(data) if has else None for data, has in zip(PARTS, stated)])
    space = Space()
    parts, source = parse(body, cut, how, space)
    assert [bytes(part) for part in parts] == PARTS
    assert space.asked == [len(data) for data, has in zip(PARTS, stated) if has]
    given = iter(space.given)
    for part, has in zip(parts, stated):
        if has:
            assert part is next(given)  # the very buffer, filled: no copy
        else:
            assert isinstance(part, bytes)
    if how == "readinto" and framing != "none":
        # The 100 kB part came by readinto, past what the parser had read ahead for its headers.
        assert source.read_into >= 100_000 - 2 * 4096
    if source is not None:
        assert source.file.tell() == len(body)  # read to its end: the connection can be reused


@pytest.mark.parametrize("how", ["chunks", "read", "readinto"])
def test_a_reused_buffer_holds_each_part_when_it_is_yielded(how):
    """The way media.Places uses it: one buffer for every part, each part used before the next is read."""
    memory = bytearray(200_000)
    body = body_of(PARTS, [len(data) for data in PARTS])
    source = Source(body, 4096)
    parts = (each_part_into(chunks(body, 4096), BOUNDARY, lambda length: memoryview(memory)[:length])
             if how == "chunks" else
             each_part_into(source.read, BOUNDARY, lambda length: memoryview(memory)[:length],
                            source.readinto if how == "readinto" else None))
    seen = [bytes(part) for part in parts]
    assert seen == PARTS


def cases():
    """(name, body) of bodies that are not what their framing says."""
    good = [b"a" * 5000, b"b" * 70_000]
    both = body_of(good, [len(data) for data in good])
    none = body_of(good, [None, None])
    cut_at = both.index(b"b" * 100) + 30_000
    yield "ends-inside-a-counted-part", both[:cut_at]
    yield "ends-inside-an-uncounted-part", none[:none.index(b"b" * 100) + 30_000]
    yield "ends-inside-part-headers", both[:both.index(b"Content-Length") + 5]
    yield "ends-before-the-close-delimiter", both[:-len(f"\r\n--{BOUNDARY}--\r\n")]
    yield "shorter-than-its-content-length", body_of(good, [len(good[0]), len(good[1]) + 5])
    yield "much-shorter-than-its-content-length", body_of(good, [len(good[0]) + 40_000, len(good[1])])
    yield "longer-than-its-content-length", body_of(good, [len(good[0]), len(good[1]) - 5])
    yield "longer-by-one", body_of(good, [len(good[0]) - 1, len(good[1])])
    yield "another-boundary", body_of(good, [None, None], boundary="other")


@pytest.mark.parametrize("name, body", list(cases()), ids=[name for name, _ in cases()])
@pytest.mark.parametrize("cut", [7, 4096, None])
@pytest.mark.parametrize("how", ["chunks", "read", "readinto"])
def test_a_body_unlike_its_framing_raises(name, body, cut, how):
    with pytest.raises(MultipartError):
        parse(body, cut, how, Space())
