"""Streaming rewriter for ``multipart/related`` bodies (RFC 2046 §5.1, PS3.18 Section 8.7.3.3).

Part bodies pass through byte for byte; only part headers are rewritten (a PACS URL in
Content-Location, the transfer syntax of a DICOM part), or the single part of a response
is unwrapped when the client asked for a single-part media type. Reads the body through a
``read(n)`` callable with a buffer bounded by the header size, never by the body size; a
part that states its Content-Length is relayed by count, as the PACS sent it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

#: Largest part header block accepted, in bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Bytes asked of the upstream at once while looking for a part's headers: a header block
#: is a few hundred bytes, and the rest is the start of the part body.
HEADER_READ = 4096
#: Bytes asked of the upstream at once for a part body.
BODY_READ = 1 << 20
#: Bytes of a DICOM part body inspected to read its File Meta Information (PS3.10 §7.1).
META_PEEK_BYTES = 4096
#: Explicit VR LE VRs with a 4-byte length (PS3.5 Section 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})

Headers = list[tuple[str, str]]
HeaderRewriter = Callable[[Headers, bytes], Headers]
#: ``read(n) -> bytes``: up to *n* bytes of a body, ``b""`` at its end.
Reader = Callable[[int], bytes]
#: ``(headers, body_start) -> None`` (relay the part) or ``finish(body) -> (headers, body)``.
Replacer = Callable[[Headers, bytes], "Callable[[bytes], tuple[Headers, bytes]] | None"]


class MultipartError(ValueError):
    """The upstream body is not the multipart/related it claims to be."""


def transfer_syntax_of(part_body: bytes) -> str | None:
    """Read TransferSyntaxUID (0002,0010) from the start of a DICOM Part-10 body.

    Parameters
    ----------
    part_body : bytes
        At least the preamble, ``DICM`` and the group 0002 elements (PS3.10 §7.1).

    Returns
    -------
    str or None
        The UID, or ``None`` when the bytes are not (enough of) a Part-10 file.
    """
    if len(part_body) < 132 or part_body[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(part_body):
        group = int.from_bytes(part_body[pos:pos + 2], "little")
        element = int.from_bytes(part_body[pos + 2:pos + 4], "little")
        if group != 0x0002:
            return None
        vr = part_body[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(part_body):
                return None
            length = int.from_bytes(part_body[pos + 8:pos + 12], "little")
            start = pos + 12
        else:
            length = int.from_bytes(part_body[pos + 6:pos + 8], "little")
            start = pos + 8
        if element == 0x0010:
            if start + length > len(part_body):
                return None
            return part_body[start:start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    return None


def _parse_headers(block: bytes) -> Headers:
    headers = []
    for line in block.decode("latin-1").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError("malformed part header")
        headers.append((name.strip(), value.strip()))
    return headers


def _format_headers(headers: Headers) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")


def header(headers: Headers, name: str) -> str | None:
    """First value of header *name* (case-insensitive) in *headers*, or ``None``."""
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def chunk_reader(chunks: Iterable[bytes]) -> Reader:
    """Adapt an iterable of byte chunks to the ``read(n)`` source the parsers take.

    Parameters
    ----------
    chunks : iterable of bytes
        The body, cut anywhere.

    Returns
    -------
    callable
        ``read(n) -> bytes``: up to *n* bytes, ``b""`` at the end. A chunk no longer than
        what is asked is returned as the same object, uncopied.
    """
    source = iter(chunks)
    chunk, offset = b"", 0

    def read(size: int) -> bytes:
        nonlocal chunk, offset
        while offset >= len(chunk):
            chunk, offset = next(source, None), 0
            if chunk is None:
                chunk = b""
                return b""
        if offset == 0 and len(chunk) <= size:
            offset = len(chunk)
            return chunk
        data = chunk[offset:offset + size]
        offset += len(data)
        return data

    return read


def _source(body: Iterable[bytes] | Reader) -> Reader:
    return body if callable(body) else chunk_reader(body)


def rewrite(body: Iterable[bytes] | Reader, boundary: str, rewrite_headers: HeaderRewriter,
            peek: Callable[[Headers], bool] = lambda headers: False,
            direct: Callable[[int], Iterable[bytes]] | None = None, out_boundary: str | None = None,
            merge: bool = False, replace: Replacer | None = None, max_replaced: int = 1 << 30) -> Iterator[bytes]:
    """Re-emit a multipart body with each part's headers passed through *rewrite_headers*.

    Parameters
    ----------
    body : iterable of bytes, or callable
        The upstream body: chunks, or ``read(n) -> bytes`` (up to *n* bytes, ``b""`` at the
        end, as ``io.BufferedReader.read``). With a reader, the body of a part that states
        its Content-Length is read in exactly that many bytes and passed on as read: no
        search for the delimiter, no copy.
    boundary : str
        The boundary from the upstream Content-Type.
    rewrite_headers : callable
        ``(headers, body_start) -> headers`` for each part; *body_start* holds the first
        bytes of the part body when *peek* asked for them, else ``b""``.
    peek : callable
        ``headers -> bool``: whether to hold the part's first :data:`META_PEEK_BYTES`
        bytes before rewriting its headers.
    direct : callable, optional
        ``count -> iterable of bytes``: relays the next *count* bytes of *body* (the rest
        of a part whose Content-Length is known) by other means, yielding only what must
        still be sent, in order, before them (:mod:`fhir_facade.dicomweb.zerocopy`), or
        ``None`` to have them read here.
    out_boundary : str, optional
        The boundary of the body re-emitted (default: *boundary*). A fresh random one keeps
        the answer unambiguous even when the upstream boundary is a fixed word that a part
        body happens to hold (field case DW-1); part bodies are counted by their
        Content-Length then, not searched.
    merge : bool
        Re-emit one part: the first part's headers, then every part's body in order
        (the frames of an instance as one Pixel Data value). *rewrite_headers* should
        drop the first part's Content-Length then.
    replace : callable, optional
        ``(headers, body_start) -> None or finish``: for a part to be replaced (a DICOM
        instance transcoded), *finish* takes the whole part body and returns its new
        ``(headers, body)``. Such a part is read whole (one part in memory at a time) and
        sent only once *finish* returned, never *direct*; an exception from *finish*
        leaves the answer ending after the previous part, without its close delimiter
        (RFC 2046 Section 5.1.1): detectably incomplete, never a cut part. Its headers
        do not go through *rewrite_headers*.
    max_replaced : int
        Most bytes of a part to be replaced held in memory; a longer one raises
        :class:`MultipartError` (with the same effect as a failing *finish*).

    Yields
    ------
    bytes
        The rewritten body. The delimiter before a part is sent with its headers.

    Raises
    ------
    MultipartError
        If the body has no boundary, a header block is too long, it ends mid-part, or a
        part is not as long as its Content-Length says.
    """
    dash_boundary = b"--" + (out_boundary or boundary).encode("latin-1")
    separator = b""  # the CRLF that ends the previous part's body (RFC 2046 §5.1.1)
    held: tuple[Callable, list[bytes]] | None = None  # a part being read whole, to be replaced
    held_bytes = 0
    if direct is not None and replace is not None:
        relay_direct = direct
        direct = lambda count: None if held is not None else relay_direct(count)  # noqa: E731
    events = _events(_source(body), boundary, peek, direct)
    for kind, value in _merged(events) if merge else events:
        if kind == "part":
            headers, start = value
            finish = replace(headers, start) if replace is not None else None
            if finish is not None:
                held, held_bytes = (finish, [start]), len(start)
                if held_bytes > max_replaced:
                    raise MultipartError(f"a part to be replaced is longer than {max_replaced} bytes")
                continue
            yield b"".join((separator, dash_boundary, b"\r\n", _format_headers(rewrite_headers(headers, start)),
                            b"\r\n", start))
        elif kind == "body":
            if held is not None:
                held[1].append(value)
                held_bytes += len(value)
                if held_bytes > max_replaced:
                    raise MultipartError(f"a part to be replaced is longer than {max_replaced} bytes")
                continue
            yield value
        elif held is not None:  # the end of a part read whole
            finish, pieces = held
            held = None
            headers, data = finish(b"".join(pieces))
            pieces.clear()
            yield b"".join((separator, dash_boundary, b"\r\n", _format_headers(headers), b"\r\n"))
            yield data
        if kind == "next":
            separator = b"\r\n"
        elif kind == "end":
            yield b"\r\n" + dash_boundary + b"--\r\n"


def _merged(events):
    """The events of one part: the first part's headers, then every part's body, in order."""
    first = True
    for kind, value in events:
        if kind == "part":
            if first:
                first = False
                yield kind, value
            elif value[1]:
                yield "body", value[1]
        elif kind != "next":
            yield kind, value


def unwrap(body: Iterable[bytes] | Reader, boundary: str,
           peek: Callable[[Headers], bool] = lambda headers: False,
           merge: bool = False) -> tuple[Headers, bytes, Iterator[bytes]]:
    """Return the headers, the start and a body iterator of the first part of a multipart body.

    *body* is chunks or a ``read(n)`` callable, as for :func:`rewrite`. The start holds the
    part's first :data:`META_PEEK_BYTES` bytes when *peek* asks for them (else ``b""``); the
    iterator yields the whole body, start included. Parts after the first are read and
    dropped (the upstream connection is drained), or with *merge* their bodies follow the
    first one's (the first part's Content-Length no longer holds then).

    Raises
    ------
    MultipartError
        If the body holds no part.
    """
    events = _events(_source(body), boundary, peek)
    if merge:
        events = _merged(events)
    for kind, value in events:
        if kind == "part":
            headers, start = value
            break
    else:
        raise MultipartError("the multipart body holds no part")

    def part_body() -> Iterator[bytes]:
        if start:
            yield start
        for kind, data in events:
            if kind == "body":
                yield data
            else:
                break
        for _ in events:
            pass

    return headers, start, part_body()


def _holdback(buffer: bytes, start: int, delimiter: bytes) -> int:
    """Where the end of *buffer* (from *start*) may begin a *delimiter* cut by the chunking.

    Returns ``len(buffer)`` when no tail of *buffer* is a proper prefix of *delimiter*.
    """
    pos = buffer.find(b"\r", max(start, len(buffer) - len(delimiter) + 1))
    while pos >= 0:
        if delimiter.startswith(buffer[pos:]):
            return pos
        pos = buffer.find(b"\r", pos + 1)
    return len(buffer)


def content_length(headers: Headers) -> int | None:
    """The part's Content-Length (RFC 9110 Section 8.6), or ``None`` when absent or not a number."""
    value = header(headers, "Content-Length")
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _events(read: Reader, boundary: str, peek: Callable[[Headers], bool],
            direct: Callable[[int], Iterable[bytes]] | None = None):
    """Yield ("part", (headers, body_start)), ("body", bytes), ("next", None), ("end", None).

    ``buffer[pos:]`` is what is not consumed yet. A part with a Content-Length has its body
    read by count, straight from *read*, and the delimiter is then required right after it;
    a part without one is found by searching for the delimiter, :data:`BODY_READ` at a time.
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) + 2
    headers: Headers = []
    buffer, pos = b"", 0

    def fill(size: int) -> bool:
        """Append up to *size* bytes to what is unconsumed; ``False`` at the end of the body."""
        nonlocal buffer, pos
        data = read(size)
        if not data:
            return False
        buffer, pos = (buffer[pos:] + data if pos < len(buffer) else data), 0
        return True

    def drain() -> None:
        while read(BODY_READ):
            pass

    while len(buffer) < keep and fill(HEADER_READ):
        pass
    state = "preamble"
    # The first delimiter usually opens the body, without the CRLF before it (RFC 2046 §5.1.1).
    if buffer.startswith(delimiter[2:]):
        pos = len(delimiter) - 2
        if buffer.startswith(b"--", pos):
            drain()
            return
        state = "headers"
    length: int | None = None  # the body bytes of the current part still to come, when known

    while True:
        if state == "headers":
            end = buffer.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_HEADER_BYTES:
                    raise MultipartError("part headers too long")
                if not fill(HEADER_READ):
                    raise MultipartError("the multipart body ends inside part headers")
                continue
            # What follows the boundary on its line is transport padding (RFC 2046 §5.1.1).
            line_end = buffer.find(b"\r\n", pos)
            headers = _parse_headers(buffer[line_end + 2:end]) if end > line_end else []
            pos = end + 4
            length = content_length(headers)
            if peek(headers):
                state = "held"
            else:
                yield "part", (headers, b"")
                state = "body"
            continue

        if length is not None:
            if state == "held":
                want = min(META_PEEK_BYTES, length)
                while len(buffer) - pos < want:
                    if not fill(HEADER_READ):
                        raise MultipartError("the multipart body ends inside a part")
                yield "part", (headers, buffer[pos:pos + want])
                pos += want
                length -= want
                state = "body"
            take = min(len(buffer) - pos, length)
            if take:
                yield "body", buffer if pos == 0 and take == len(buffer) else buffer[pos:pos + take]
                pos += take
                length -= take
            relayed = direct(length) if direct is not None and length else None
            if relayed is not None:
                for data in relayed:
                    yield "body", data
                length = 0
            while length:
                data = read(min(length, BODY_READ))
                if not data:
                    raise MultipartError("the multipart body ends inside a part")
                yield "body", data
                length -= len(data)
            length = None
            while len(buffer) - pos < keep and fill(HEADER_READ):
                pass
            if not buffer.startswith(delimiter, pos):
                raise MultipartError("a part is not as long as its Content-Length says")
            index = pos
        else:
            index = buffer.find(delimiter, pos)
            if index < 0 or len(buffer) < index + keep:
                if state == "body":
                    cut = index if index >= 0 else _holdback(buffer, pos, delimiter)
                    if cut > pos:
                        yield "body", buffer if pos == 0 and cut == len(buffer) else buffer[pos:cut]
                        pos = cut
                elif state == "held" and index < 0 and len(buffer) - pos >= META_PEEK_BYTES + keep:
                    yield "part", (headers, buffer[pos:pos + META_PEEK_BYTES])
                    pos += META_PEEK_BYTES
                    state = "body"
                    continue
                elif state == "preamble" and index < 0:
                    pos = max(pos, len(buffer) - keep)
                if not fill(BODY_READ):
                    if state == "preamble":
                        raise MultipartError("no multipart boundary in the body")
                    raise MultipartError("the multipart body ends inside a part")
                continue

        content = buffer[pos:index]
        pos = index + len(delimiter)
        if state == "held":
            yield "part", (headers, content)
        elif state == "body" and content:
            yield "body", content
        if buffer.startswith(b"--", pos):
            if state != "preamble":
                yield "end", None
            drain()  # the epilogue, so that the connection can be reused
            return
        if state != "preamble":
            yield "next", None
        state = "headers"


def each_part(body: Iterable[bytes] | Reader, boundary: str) -> Iterator[bytes]:
    """Yield the body of each part of a multipart body, whole, one part at a time.

    Memory holds one part (and the parser's read-ahead), however many parts the body has:
    what the DICOM-media ZIP (:mod:`fhir_facade.dicomweb.media`) needs of a study retrieval.

    Raises
    ------
    MultipartError
        If the body is not multipart with this boundary.
    """
    current: list[bytes] | None = None
    for kind, value in _events(_source(body), boundary, lambda headers: False):
        if kind == "part":
            if current is not None:
                yield b"".join(current)
            current = [value[1]] if value[1] else []
        elif kind == "body" and current is not None:
            current.append(value)
        elif kind in ("next", "end") and current is not None:
            yield b"".join(current)
            current = None
    if current is not None:
        yield b"".join(current)


def each_part_into(body: Iterable[bytes] | Reader, boundary: str, space: Callable[[int], memoryview],
                   readinto: Callable[[memoryview], int] | None = None) -> Iterator[bytes | memoryview]:
    """Yield the body of each part, whole, as :func:`each_part` does; a part with a Content-Length
    is read into ``space(length)``, the rest of it straight from *readinto* when given.

    What the DICOM-media ZIP reads a study with: the part bodies land where the caller wants them
    (memory it reuses), read by the socket into it, not allocated, read into Python objects and
    joined part by part.

    Parameters
    ----------
    body : iterable of bytes or callable
        The multipart body, as for :func:`each_part`.
    boundary : str
        Its boundary.
    space : callable
        ``space(length)`` gives a writable buffer of *length* bytes for the next part body; it is
        what is yielded, filled.
    readinto : callable, optional
        Reads from the same source as *body* into a buffer and answers the count (0 at the end),
        like :meth:`io.RawIOBase.readinto`; without it, part bodies are read by *body*.

    Raises
    ------
    MultipartError
        If the body is not multipart with this boundary, or ends inside a part.
    """
    place: memoryview | None = None
    filled = 0
    pieces: list[bytes] = []

    def direct(length: int) -> Iterable[bytes]:
        nonlocal filled
        view = place[filled:filled + length]
        while view:
            count = readinto(view)
            if not count:
                raise MultipartError("the multipart body ends inside a part")
            view = view[count:]
        filled += length
        return ()

    def whole() -> bytes | memoryview:
        return place if place is not None else b"".join(pieces)

    started = False
    for kind, value in _events(_source(body), boundary, lambda headers: False,
                               direct=direct if readinto is not None else None):
        if kind == "part":
            if started:
                yield whole()
            started = True
            length = content_length(value[0])
            place, filled, pieces = (space(length) if length is not None else None), 0, []
        elif kind == "body" and started:
            if place is not None:
                place[filled:filled + len(value)] = value
                filled += len(value)
            else:
                pieces.append(value)
        elif kind in ("next", "end") and started:
            yield whole()
            started = False
    if started:
        yield whole()
