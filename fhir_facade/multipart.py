"""Streaming rewriter for ``multipart/related`` bodies (RFC 2046 §5.1, PS3.18 Section 8.7.3.3).

Part bodies pass through byte for byte; only part headers are rewritten (a PACS URL in
Content-Location, the transfer syntax of a DICOM part), or the single part of a response
is unwrapped when the client asked for a single-part media type. Works chunk by chunk with
a buffer bounded by the header size, never by the body size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

#: Largest part header block accepted, in bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Bytes of a DICOM part body inspected to read its File Meta Information (PS3.10 §7.1).
META_PEEK_BYTES = 4096
#: Explicit VR LE VRs with a 4-byte length (PS3.5 Section 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})

Headers = list[tuple[str, str]]
HeaderRewriter = Callable[[Headers, bytes], Headers]


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


def rewrite(chunks: Iterable[bytes], boundary: str, rewrite_headers: HeaderRewriter,
            peek: Callable[[Headers], bool] = lambda headers: False) -> Iterator[bytes]:
    """Re-emit a multipart body with each part's headers passed through *rewrite_headers*.

    Parameters
    ----------
    chunks : iterable of bytes
        The upstream body.
    boundary : str
        The boundary from the upstream Content-Type; kept unchanged.
    rewrite_headers : callable
        ``(headers, body_start) -> headers`` for each part; *body_start* holds the first
        bytes of the part body when *peek* asked for them, else ``b""``.
    peek : callable
        ``headers -> bool``: whether to hold the part's first :data:`META_PEEK_BYTES`
        bytes before rewriting its headers.

    Yields
    ------
    bytes
        The rewritten body. Upstream chunks that hold no delimiter are passed on as the
        same objects, uncopied; the delimiter before a part is sent with its headers.

    Raises
    ------
    MultipartError
        If the body has no boundary, a header block is too long, or it ends mid-part.
    """
    dash_boundary = b"--" + boundary.encode("latin-1")
    separator = b""  # the CRLF that ends the previous part's body (RFC 2046 §5.1.1)
    for kind, value in _events(chunks, boundary, peek):
        if kind == "part":
            headers, start = value
            yield b"".join((separator, dash_boundary, b"\r\n", _format_headers(rewrite_headers(headers, start)),
                            b"\r\n", start))
        elif kind == "body":
            yield value
        elif kind == "next":
            separator = b"\r\n"
        elif kind == "end":
            yield b"\r\n" + dash_boundary + b"--\r\n"


def unwrap(chunks: Iterable[bytes], boundary: str) -> tuple[Headers, Iterator[bytes]]:
    """Return the headers and a body iterator of the first part of a multipart body.

    Parts after the first are read and dropped (the upstream connection is drained).

    Raises
    ------
    MultipartError
        If the body holds no part.
    """
    events = _events(chunks, boundary, lambda headers: False)
    for kind, value in events:
        if kind == "part":
            headers, start = value
            break
    else:
        raise MultipartError("the multipart body holds no part")

    def body() -> Iterator[bytes]:
        if start:
            yield start
        for kind, data in events:
            if kind == "body":
                yield data
            else:
                break
        for _ in events:
            pass

    return headers, body()


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


def _events(chunks: Iterable[bytes], boundary: str, peek: Callable[[Headers], bool]):
    """Yield ("part", (headers, body_start)), ("body", bytes), ("next", None), ("end", None).

    ``buffer[pos:]`` is what is not consumed yet. Bytes are sliced out of it only around
    a delimiter; a chunk without one comes out as the very object that came in.
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) + 2
    headers: Headers = []
    source = iter(chunks)

    def more() -> bytes:
        for chunk in source:
            if chunk:
                return chunk
        return b""

    buffer = more()
    while 0 < len(buffer) < keep:
        chunk = more()
        if not chunk:
            break
        buffer += chunk
    pos = 0
    state = "preamble"
    # The first delimiter usually opens the body, without the CRLF before it (RFC 2046 §5.1.1).
    if buffer.startswith(delimiter[2:]):
        pos = len(delimiter) - 2
        if buffer.startswith(b"--", pos):
            for _ in source:
                pass
            return
        state = "headers"

    while True:
        if state == "headers":
            end = buffer.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_HEADER_BYTES:
                    raise MultipartError("part headers too long")
                chunk = more()
                if not chunk:
                    raise MultipartError("the multipart body ends inside part headers")
                buffer, pos = buffer[pos:] + chunk, 0
                continue
            # What follows the boundary on its line is transport padding (RFC 2046 §5.1.1).
            line_end = buffer.find(b"\r\n", pos)
            headers = _parse_headers(buffer[line_end + 2:end]) if end > line_end else []
            pos = end + 4
            if peek(headers):
                state = "held"
            else:
                yield "part", (headers, b"")
                state = "body"
            continue

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
            chunk = more()
            if not chunk:
                if state == "preamble":
                    raise MultipartError("no multipart boundary in the body")
                raise MultipartError("the multipart body ends inside a part")
            buffer, pos = (buffer[pos:] + chunk if pos < len(buffer) else chunk), 0
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
            for _ in source:  # drain the epilogue so the connection can be reused
                pass
            return
        if state != "preamble":
            yield "next", None
        state = "headers"
