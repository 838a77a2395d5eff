"""Zero-copy relay of large part bodies, PACS socket to client socket, with Linux ``splice(2)``.

A whole-study retrieval is mostly part bodies that pass through unchanged. Read into Python
and written out again, each byte is copied twice by the facade; spliced through a pipe, it
stays in the kernel and the facade's cost per byte is close to nothing.

This works only where both ends are plain TCP sockets the facade may write to itself:

- the PACS answer ends when its connection closes (no ``Content-Length``, not chunked),
  as Orthanc sends every multipart answer, so bytes taken off its socket under the HTTP
  client cannot confuse it about where the answer ends;
- the server is gunicorn speaking HTTP/1.x itself, which hands the client socket over as
  ``gunicorn.socket`` (its documented environ key), writes every item of the response
  iterable before asking for the next, and frames the body as HTTP/1.1 chunks when there is
  no Content-Length (RFC 9112 Section 7.1), which the spliced bytes then follow. The environ
  cannot tell that apart from gunicorn behind its uWSGI or HTTP/2 front ends, whose framing
  differs, so the production configuration (``gunicorn.conf.py``) turns splicing on with
  :func:`enable` only after checking its own settings;
- neither connection is TLS (the PACS URL is ``http:``; the client socket is a plain socket).

Anywhere else :func:`splicer_for` answers ``None`` and the body is read and written as usual.
"""
from __future__ import annotations

import fcntl
import io
import logging
import os
import select
import socket
import struct
from collections.abc import Iterator

#: Part bodies at least this long (bytes) are spliced; shorter ones cost less to copy.
MIN_SPLICE = 64 * 1024
#: Pipe capacity asked for (bytes); Linux allows up to /proc/sys/fs/pipe-max-size (1 MiB).
PIPE_SIZE = 1 << 20

_AVAILABLE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
#: HTTP versions whose framing :class:`Splicer` writes: chunked for 1.1, none for 1.0.
_FRAMING = {"HTTP/1.1": True, "HTTP/1.0": False}
#: Pieces written in one ``writev`` at most (Linux's IOV_MAX is 1024).
_MAX_PIECES = 512
#: ``struct timeval`` (seconds, microseconds), for ``SO_SNDTIMEO``.
_TIMEVAL = struct.Struct("@ll")
_enabled = False

log = logging.getLogger(__name__)


class Splicer:
    """Moves counted bytes from the PACS socket to the client socket inside the kernel.

    Parameters
    ----------
    reader : io.BufferedReader
        The HTTP client's buffered reader over the PACS socket; what it already holds is
        sent first, as ordinary bytes. Its socket is read by file descriptor.
    sink : socket.socket
        The client socket.
    chunked : bool
        Whether the server frames the response body as HTTP/1.1 chunks (RFC 9112
        Section 7.1); spliced bytes then go out as one chunk of their own.
    timeout : float
        Seconds to wait for the PACS, or for a non-blocking client socket, before giving
        up (``TimeoutError``).
    """

    def __init__(self, reader: io.BufferedReader, sink: socket.socket, chunked: bool, timeout: float):
        self.reader = reader
        self.source = reader.fileno()
        self.sink = sink.fileno()
        self.chunked = chunked
        self.timeout = timeout
        self._pipe: tuple[int, int] | None = None
        #: Bytes and part bodies spliced so far.
        self.spliced = 0
        self.parts = 0

    def _pipe_fds(self) -> tuple[int, int]:
        if self._pipe is None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # the default 64 KiB works, in more system calls
            self._pipe = (read_end, write_end)
        return self._pipe

    def body(self, count: int) -> Iterator[bytes]:
        """Relay the next *count* bytes of the PACS answer to the client.

        Yields what the reader had already buffered (for the response iterable to send
        first); the rest is spliced when the iteration resumes, after those bytes went out.

        Raises
        ------
        EOFError
            If the PACS connection ends first.
        OSError
            If either socket fails, or the PACS stalls for :attr:`timeout` seconds. A client
            that stops reading blocks the write as it blocks gunicorn's own writes (the client
            socket is in blocking mode): a buffering proxy in front is what bounds that.
        """
        if count < MIN_SPLICE:
            data = self.reader.read(count)
            if len(data) < count:
                raise EOFError("the PACS connection ended inside a part")
            yield data
            return
        buffered = self.reader.peek(count)[:count]  # never reads beyond what the buffer can hold
        if buffered:
            data = self.reader.read(len(buffered))
            yield data
            count -= len(data)
        if count:
            self._splice(count)

    def _splice(self, count: int) -> None:
        read_end, write_end = self._pipe_fds()
        if self.chunked:
            self._send(b"%X\r\n" % count)
        remaining = count
        while remaining:
            try:
                moved = os.splice(self.source, write_end, min(remaining, PIPE_SIZE), flags=os.SPLICE_F_MOVE)
            except BlockingIOError:
                self._wait(self.source, readable=True)
                continue
            if moved == 0:
                raise EOFError("the PACS connection ended inside a part")
            remaining -= moved
            while moved:
                try:
                    sent = os.splice(read_end, self.sink, moved,
                                     flags=os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if remaining else 0))
                except BlockingIOError:
                    self._wait(self.sink, readable=False)
                    continue
                moved -= sent
        if self.chunked:
            self._send(b"\r\n")
        self.spliced += count
        self.parts += 1

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.sink, view):]
            except BlockingIOError:
                self._wait(self.sink, readable=False)

    def _wait(self, fd: int, readable: bool) -> None:
        _wait(fd, readable, self.timeout)

    def close(self) -> None:
        """Close the pipe (idempotent)."""
        if self._pipe is not None:
            log.debug("spliced %d bytes in %d part bodies", self.spliced, self.parts)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


def enable(protocol: str, http_protocols=("h1",), http2_cleartext: str = "off") -> bool:
    """Allow splicing in this process when gunicorn itself speaks plain HTTP/1.x to clients.

    Parameters
    ----------
    protocol : str
        gunicorn's ``protocol`` setting (``http`` or ``uwsgi``).
    http_protocols : sequence of str or str
        gunicorn's ``http_protocols`` setting (``["h1"]``, or ``"h2,h1"`` as written).
    http2_cleartext : str
        gunicorn's ``http2_cleartext`` setting (``off``, ``prior-knowledge``, ``upgrade``, ``both``).

    Returns
    -------
    bool
        Whether splicing is now on (never where ``splice(2)`` is missing).
    """
    global _enabled
    versions = http_protocols.split(",") if isinstance(http_protocols, str) else list(http_protocols or ())
    _enabled = (_AVAILABLE and protocol == "http" and str(http2_cleartext) == "off"
                and {str(v).strip().lower() for v in versions} <= {"h1"})
    return _enabled


def client_socket(environ: dict) -> tuple[socket.socket, bool] | None:
    """The client socket of this request and whether its body is framed as HTTP/1.1 chunks, when
    the facade may write the response body to it itself (the server conditions of the module
    docstring); else ``None``."""
    chunked = _FRAMING.get(environ.get("SERVER_PROTOCOL"))
    if not _enabled or chunked is None or environ.get("REQUEST_METHOD") == "HEAD":
        return None
    sink = environ.get("gunicorn.socket")
    if type(sink) is not socket.socket or sink.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        return None
    return sink, chunked


def unframed_answer(upstream):
    """http.client's response under a PACS answer *upstream* whose body ends when the connection
    closes (plain HTTP, no Content-Length, not chunked: the PACS conditions of the module
    docstring), so that reading its socket directly cannot confuse the HTTP client; else ``None``.

    Parameters
    ----------
    upstream : requests.Response
        Opened with ``stream=True``.
    """
    response = getattr(getattr(upstream, "raw", None), "_fp", None)  # urllib3 keeps http.client's here
    reader = getattr(response, "fp", None)
    if (not str(getattr(upstream, "url", "")).startswith("http://") or not isinstance(reader, io.BufferedReader)
            or getattr(response, "chunked", True) or getattr(response, "length", 0) is not None
            or not getattr(response, "will_close", False)):
        return None
    return response


def splicer_for(upstream, environ: dict, timeout: float) -> Splicer | None:
    """A :class:`Splicer` from the PACS answer *upstream* to this request's client, when safe.

    Parameters
    ----------
    upstream : requests.Response
        The PACS answer, opened with ``stream=True`` and not yet read.
    environ : dict
        The WSGI environ of the request being answered.
    timeout : float
        Seconds either socket may stall.

    Returns
    -------
    Splicer or None
        ``None`` unless every condition in the module docstring holds.
    """
    client = client_socket(environ)
    response = unframed_answer(upstream) if client is not None else None
    if response is None:
        return None
    return Splicer(response.fp, client[0], client[1], timeout)


def write_blocks(blocks: Iterator[bytes], sink: socket.socket, chunked: bool, timeout: float) -> Iterator[bytes]:
    """:func:`write_pieces` of *blocks*, each block written alone (one ``writev``, one chunk)."""
    return write_pieces(blocks, sink, chunked, timeout, size=1)


def write_pieces(pieces: Iterator[bytes | memoryview], sink: socket.socket, chunked: bool, timeout: float,
                 size: int) -> Iterator[bytes]:
    """A response body that writes *pieces* (bytes-like) to the client socket itself, at least
    *size* bytes at a time in one system call each (``writev(2)``: the pieces as they are, with
    the chunk framing around them, RFC 9112 Section 7.1; neither joined into one buffer as
    gunicorn does).

    The pieces up to the first *size* bytes are yielded joined, for the server to send the status
    line and headers with them; the others are written as the iteration resumes, each piece before
    the next is asked for once *size* bytes are pending. A blocking socket (gunicorn hands it over
    so) gets a send timeout meanwhile (``SO_SNDTIMEO``, socket(7)), so that a client that stops
    reading is given up after *timeout* seconds instead of holding the thread. For a socket from
    :func:`client_socket`.

    Raises
    ------
    OSError
        The client socket fails, or stalls for *timeout* seconds.
    """
    pieces = iter(pieces)
    first, count = [], 0
    for piece in pieces:
        first.append(piece)
        count += len(piece)
        if count >= size:
            break
    if not first:
        return
    yield b"".join(first)
    del first
    fd, blocking = sink.fileno(), sink.getblocking()
    if blocking:  # as gunicorn's gthread worker hands it over: the kernel bounds each write instead
        before = sink.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.size)
        seconds = max(timeout, 0.001)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        _TIMEVAL.pack(int(seconds), int(seconds % 1 * 1_000_000)))
    try:
        pending, count = [], 0
        for piece in pieces:
            if piece:
                pending.append(piece)
                count += len(piece)
            if count >= size or len(pending) >= _MAX_PIECES:
                _write_all(fd, [b"%X\r\n" % count, *pending, b"\r\n"] if chunked else pending, timeout,
                           waited=blocking)
                pending, count = [], 0
        if pending:
            _write_all(fd, [b"%X\r\n" % count, *pending, b"\r\n"] if chunked else pending, timeout, waited=blocking)
    finally:
        if blocking:
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, before)


def _write_all(fd: int, buffers: list, timeout: float, waited: bool = False) -> None:
    """Write every byte of *buffers*; *waited*: the socket is blocking with ``SO_SNDTIMEO``, so a
    write that would block has already waited *timeout* seconds."""
    views = [memoryview(buffer) for buffer in buffers]
    while views:
        try:
            written = os.writev(fd, views)
        except BlockingIOError:
            if waited:
                raise TimeoutError("the client stopped reading") from None
            _wait(fd, readable=False, timeout=timeout)
            continue
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _wait(fd: int, readable: bool, timeout: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN if readable else select.POLLOUT)
    if not poller.poll(timeout * 1000):
        raise TimeoutError("a connection stalled while relaying a part body")
