"""Test helper: two independent multipart/related parsers (one trusts Content-Length, one ignores it)."""
from __future__ import annotations

import re


def boundary_of(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, content_type
    return match.group(1)


def _headers(block: bytes) -> dict:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def parse_by_boundary(body: bytes, content_type: str) -> list[tuple[dict, bytes]]:
    """Split on CRLF--boundary only (RFC 2046 §5.1.1), ignoring Content-Length."""
    delimiter = b"\r\n--" + boundary_of(content_type).encode()
    pieces = (b"\r\n" + body).split(delimiter)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        head, _, data = piece.partition(b"\r\n\r\n")
        parts.append((_headers(head.split(b"\r\n", 1)[1] if b"\r\n" in head else b""), data))
    return parts


def parse_by_length(body: bytes, content_type: str) -> list[tuple[dict, bytes]]:
    """Read each part's Content-Length bytes after its headers; fall back to the boundary without it."""
    dash = b"--" + boundary_of(content_type).encode()
    pos = body.index(dash)
    parts = []
    while True:
        pos += len(dash)
        if body[pos:pos + 2] == b"--":
            return parts
        pos = body.index(b"\r\n", pos) + 2
        end = body.index(b"\r\n\r\n", pos - 2)
        headers = _headers(body[pos:end])
        pos = end + 4
        if "content-length" in headers:
            length = int(headers["content-length"])
            data = body[pos:pos + length]
            pos += length
            assert body[pos:pos + 2] == b"\r\n", "Content-Length does not end at a delimiter"
            pos += 2
            assert body[pos:pos + len(dash)] == dash
        else:
            nxt = body.index(b"\r\n" + dash, pos)
            data = body[pos:nxt]
            pos = nxt + 2
        parts.append((headers, data))
