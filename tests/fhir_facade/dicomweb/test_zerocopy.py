"""Unit tests for the splice(2) relay (fhir_facade.dicomweb.zerocopy) over real loopback socket pairs."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import types

import pytest

from fhir_facade.dicomweb import multipart, zerocopy

pytestmark = pytest.mark.skipif(not zerocopy._AVAILABLE, reason="splice(2) is Linux-only")


def pair():
    """Two connected TCP sockets on loopback (splice needs real sockets, as in production)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def feed(sock, data: bytes) -> threading.Thread:
    """Send *data* from a thread, then close (the PACS answer ends with its connection)."""
    def run():
        sock.sendall(data)
        sock.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def drain(sock, into: bytearray) -> threading.Thread:
    def run():
        while chunk := sock.recv(1 << 16):
            into.extend(chunk)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def dechunk(data: bytes) -> bytes:
    """Undo HTTP/1.1 chunked framing (RFC 9112 Section 7.1); assert it is well formed."""
    out, pos = bytearray(), 0
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end], 16)
        start = line_end + 2
        assert data[start + size:start + size + 2] == b"\r\n"
        out += data[start:start + size]
        pos = start + size + 2
        if size == 0:
            assert pos == len(data)
            return bytes(out)


def body_of(parts, boundary="b0undary"):
    out = b""
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def relay(parts, chunked: bool):
    """Relay body_of(parts) as the facade does: rewrite headers, splice bodies, frame as the server would."""
    pacs_side, facade_in = pair()
    facade_out, client_side = pair()
    body = body_of(parts)
    sender = feed(pacs_side, body)
    received = bytearray()
    receiver = drain(client_side, received)
    reader = facade_in.makefile("rb")
    splicer = zerocopy.Splicer(reader, facade_out, chunked=chunked, timeout=10)
    for item in multipart.rewrite(reader.read, "b0undary", lambda h, s: h, direct=splicer.body):
        # What a WSGI server does with each item of the response iterable.
        facade_out.sendall(b"%X\r\n%s\r\n" % (len(item), item) if chunked else item)
    if chunked:
        facade_out.sendall(b"0\r\n\r\n")
    splicer.close()
    facade_out.close()
    sender.join()
    receiver.join()
    reader.close()
    facade_in.close()
    client_side.close()
    return body, bytes(received), splicer


@pytest.mark.parametrize("chunked", [True, False], ids=["http/1.1-chunked", "http/1.0-raw"])
def test_large_part_bodies_are_spliced_and_the_body_is_byte_identical(chunked):
    parts = [os.urandom(300_000), b"small part", os.urandom(zerocopy.MIN_SPLICE + 20_000), b"\r\n--b0undary" * 9000]
    body, received, splicer = relay(parts, chunked)
    assert (dechunk(received) if chunked else received) == body
    # Three of the four bodies are long enough to splice; of each, only what came with its
    # headers (HEADER_READ) and what the reader had already buffered (its 8 KiB) went through Python.
    assert splicer.parts == 3
    assert splicer.spliced > sum(len(p) for p in parts if len(p) >= zerocopy.MIN_SPLICE) - 3 * (4096 + 8192)
    assert splicer.spliced <= sum(len(p) for p in parts if len(p) >= zerocopy.MIN_SPLICE)


def test_a_pacs_connection_that_ends_inside_a_part_raises():
    pacs_side, facade_in = pair()
    facade_out, client_side = pair()
    data = body_of([os.urandom(200_000)])[:150_000]
    sender = feed(pacs_side, data)
    received = bytearray()
    receiver = drain(client_side, received)
    reader = facade_in.makefile("rb")
    splicer = zerocopy.Splicer(reader, facade_out, chunked=True, timeout=10)
    with pytest.raises(EOFError):
        for item in multipart.rewrite(reader.read, "b0undary", lambda h, s: h, direct=splicer.body):
            facade_out.sendall(item)
    splicer.close()
    facade_out.close()
    for thread in (sender, receiver):
        thread.join()
    for sock in (reader, facade_in, client_side):
        sock.close()


def test_a_stalled_pacs_times_out():
    pacs_side, facade_in = pair()
    facade_out, client_side = pair()
    pacs_side.sendall(body_of([b"x" * 200_000])[:100_000])  # ... and then nothing
    facade_in.settimeout(5)  # as urllib3 leaves it: non-blocking underneath
    reader = facade_in.makefile("rb")
    splicer = zerocopy.Splicer(reader, facade_out, chunked=False, timeout=0.2)
    client_side.setblocking(False)
    with pytest.raises(TimeoutError):
        for item in multipart.rewrite(reader.read, "b0undary", lambda h, s: h, direct=splicer.body):
            facade_out.sendall(item)
            try:
                client_side.recv(1 << 20)
            except BlockingIOError:
                pass
    splicer.close()
    for sock in (pacs_side, reader, facade_in, facade_out, client_side):
        sock.close()


def response(url="http://pacs.internal/dicom-web/studies/1", chunked=False, length=None, will_close=True,
             reader=None):
    """A stand-in for requests' streamed Response, shaped as urllib3 and http.client leave it."""
    fp = types.SimpleNamespace(fp=reader, chunked=chunked, length=length, will_close=will_close)
    return types.SimpleNamespace(url=url, raw=types.SimpleNamespace(_fp=fp))


@pytest.fixture
def enabled():
    """Splicing switched on as gunicorn.conf.py does for a plain HTTP/1.x server; restored after."""
    before = zerocopy._enabled
    assert zerocopy.enable("http", ["h1"], "off")
    yield
    zerocopy._enabled = before


@pytest.mark.parametrize("settings", [("uwsgi", ["h1"], "off"), ("http", ["h2", "h1"], "off"),
                                      ("http", "h2,h1", "off"), ("http", ["h1"], "upgrade"),
                                      ("http", ["h1"], "prior-knowledge")])
def test_gunicorn_settings_with_other_framing_keep_splicing_off(settings):
    before = zerocopy._enabled
    pacs_side, facade_in = pair()
    reader = facade_in.makefile("rb")
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": pacs_side}
    try:
        assert zerocopy.enable(*settings) is False
        assert zerocopy.splicer_for(response(reader=reader), environ, 5) is None
    finally:
        zerocopy._enabled = before
        for sock in (pacs_side, reader, facade_in):
            sock.close()


def test_splicing_is_used_only_where_it_is_safe(enabled):
    pacs_side, facade_in = pair()
    facade_out, client_side = pair()
    reader = facade_in.makefile("rb")
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": facade_out}
    try:
        ok = zerocopy.splicer_for(response(reader=reader), environ, 5)
        assert ok is not None and ok.chunked is True
        http_1_0 = dict(environ, SERVER_PROTOCOL="HTTP/1.0")
        assert zerocopy.splicer_for(response(reader=reader), http_1_0, 5).chunked is False
        refused = [
            (response(reader=reader), dict(environ, REQUEST_METHOD="HEAD")),       # no body may be sent
            (response(reader=reader), dict(environ, SERVER_PROTOCOL="HTTP/2")),    # framing of its own
            (response(reader=reader), {k: v for k, v in environ.items() if k != "gunicorn.socket"}),  # not gunicorn
            (response(reader=reader, url="https://pacs.internal/x"), environ),     # TLS to the PACS
            (response(reader=reader, chunked=True), environ),                      # framing to keep track of
            (response(reader=reader, length=1000), environ),                       # a length to keep track of
            (response(reader=reader, will_close=False), environ),                  # a connection to reuse
            (response(reader=None), environ),                                      # not an http.client reader
        ]
        for upstream, env in refused:
            assert zerocopy.splicer_for(upstream, env, 5) is None
    finally:
        for sock in (pacs_side, reader, facade_in, facade_out, client_side):
            sock.close()


# --------------------------------------------------------------------------- write_blocks (the ZIP's writev path)

def framed(block: bytes) -> bytes:
    """What an HTTP/1.1 server sends for one item of a response iterable (RFC 9112 Section 7.1)."""
    return b"%X\r\n%s\r\n" % (len(block), block)


def serve_blocks(blocks, chunked: bool, sender=None, receiver=None, timeout=10.0):
    """Answer with write_blocks as gunicorn would (frame and send what it yields, then the last chunk);
    return what was yielded and what the client received."""
    facade_out, client_side = sender or pair()
    received = bytearray()
    reading = (receiver or drain)(client_side, received)
    yielded = []
    try:
        for item in zerocopy.write_blocks(iter(blocks), facade_out, chunked, timeout):
            yielded.append(item)
            facade_out.sendall(framed(item) if chunked else item)
        if chunked:
            facade_out.sendall(b"0\r\n\r\n")
    finally:
        facade_out.close()
        reading.join()
        client_side.close()
    return yielded, bytes(received)


BLOCKS = [b"PK\x03\x04 the first block", os.urandom(256 * 1024), b"", b"7 bytes", os.urandom(300_001), b"end"]


@pytest.mark.parametrize("chunked", [True, False], ids=["http/1.1-chunked", "http/1.0-raw"])
def test_write_blocks_yields_the_first_block_and_writes_the_others_framed_in_order(chunked):
    yielded, received = serve_blocks(BLOCKS, chunked)
    assert yielded == [BLOCKS[0]]  # with the status line and headers, by the server
    if chunked:
        # Each block its own chunk, the empty one not at all (it would end the body), then the last chunk.
        assert received == b"".join(framed(block) for block in BLOCKS if block) + b"0\r\n\r\n"
        assert dechunk(received) == b"".join(BLOCKS)
    else:
        assert received == b"".join(BLOCKS)


@pytest.mark.parametrize("chunked", [True, False])
def test_write_blocks_of_nothing_or_one_block_writes_nothing_itself(chunked):
    assert serve_blocks([], chunked) == ([], b"0\r\n\r\n" if chunked else b"")
    assert serve_blocks([b"only"], chunked) == ([b"only"], framed(b"only") + b"0\r\n\r\n" if chunked else b"only")


def slow_drain(sock, into: bytearray) -> threading.Thread:
    """A client reading little at a time, with pauses: the sender's buffer fills again and again."""
    def run():
        reads = 0
        while chunk := sock.recv(8192):
            into.extend(chunk)
            reads += 1
            if reads % 8 == 0:
                time.sleep(0.001)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("chunked", [True, False])
def test_partial_writes_to_a_full_non_blocking_socket_still_deliver_every_byte(chunked, monkeypatch):
    facade_out, client_side = pair()
    facade_out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    facade_out.setblocking(False)
    calls = []
    real_writev = os.writev

    def writev(fd, buffers):
        buffers = list(buffers)
        try:
            written = real_writev(fd, buffers)
        except BlockingIOError:
            calls.append("blocked")
            raise
        calls.append("partial" if written < sum(len(b) for b in buffers) else "whole")
        return written
    monkeypatch.setattr(zerocopy.os, "writev", writev)
    blocks = [b"first"] + [os.urandom(200_000) for _ in range(2)] + [b"tail"]
    yielded, received = serve_blocks(blocks, chunked, sender=(facade_out, client_side), receiver=slow_drain)
    monkeypatch.undo()
    assert yielded == [b"first"]
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(
        (b"".join(framed(b) for b in blocks) + b"0\r\n\r\n") if chunked else b"".join(blocks)).hexdigest()
    assert "partial" in calls and "blocked" in calls  # the paths under test were taken


def test_a_client_that_never_reads_times_out():
    facade_out, client_side = pair()
    facade_out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    facade_out.setblocking(False)
    blocks = iter([b"first"] + [bytes(256 * 1024)] * 64)  # 16 MiB: more than any socket buffer holds
    body = zerocopy.write_blocks(blocks, facade_out, True, 0.3)
    assert next(body) == b"first"
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            next(body)
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        facade_out.close()
        client_side.close()


def test_a_client_that_never_reads_times_out_on_a_socket_as_gunicorn_hands_it_over():
    facade_out, client_side = pair()
    facade_out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    facade_out.setblocking(True)  # as gunicorn.workers.gthread leaves it while the app runs
    outcome = []

    def serve():
        body = zerocopy.write_blocks(iter([b"first"] + [bytes(256 * 1024)] * 64), facade_out, True, 0.3)
        next(body)
        try:
            next(body)
        except Exception as exc:  # what ended the write: a timeout, or the reset below
            outcome.append(exc)
    server = threading.Thread(target=serve)
    server.start()
    server.join(1.5)  # five times the timeout
    stalled = server.is_alive()
    client_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client_side.close()  # a reset ends the blocked write
    server.join(10)
    timeout_after = facade_out.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16)
    blocking_after = facade_out.getblocking()
    facade_out.close()
    assert not server.is_alive()  # the thread is not left behind, whatever the outcome
    assert not stalled and isinstance(outcome[0], TimeoutError), outcome
    assert timeout_after == bytes(16) and blocking_after  # the socket handed back as it was given
