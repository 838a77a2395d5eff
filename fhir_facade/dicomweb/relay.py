"""Relaying PACS answers to the client: streamed, URL-rewritten, in the negotiated representation.

Bodies of retrievals pass through byte for byte, chunk by chunk (multipart part headers are
rewritten, never part bodies); DICOM JSON answers (QIDO-RS and metadata) are rewritten so that
RetrieveURL (0008,1190) and BulkDataURI point at the facade. Nothing here decides access:
:mod:`fhir_facade.dicomweb.api` authorizes before calling in.
"""
from __future__ import annotations

import io
import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import requests
import urllib3
from flask import Response, current_app, request

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import to_fhir_id
from fhir_facade.dicom.transcoding import MAX_INSTANCE_BYTES, TranscodeError, transcode_instance
from fhir_facade.dicomweb import multipart, transcoded, zerocopy
from fhir_facade.dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, Choice, parse_media_type
from fhir_facade.pacs.client import DICOM_JSON, READ_ERRORS, PacsError, broken_answer, dicom_json_array, get_pacs

CHUNK = 1024 * 1024
#: Response headers relayed from the PACS with a body relayed as is (hop-by-hop headers,
#: RFC 9110 §7.6.1, never are). Not Cache-Control: a PACS's ``public`` would let a shared
#: cache serve a token-protected answer to anyone (RFC 9111 Section 3.5).
RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Content-Location", "Warning",
                   "ETag", "Last-Modified")
#: Of those, the ones that say what the body is: without them it would be misread.
_BODY_HEADERS = ("Content-Type", "Content-Encoding")


class DicomwebError(Exception):
    """An error answered by the proxy itself (PS3.18 Section 8.6 status codes)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class NotAvailable(DicomwebError):
    """The PACS cannot produce the representation asked for (it cannot transcode): 406,
    unless another representation the client accepts can be tried (PS3.18 Section 8.7.1)."""

    def __init__(self, message: str):
        super().__init__(406, message)


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    """A DICOMweb error answer: ``{"status", "message"}`` JSON (PS3.18 Section 8.6 status codes)."""
    body = json.dumps({"status": status, "message": message})
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _public_base() -> str:
    return f"{current_app.config['FACADE_PUBLIC_URL']}/dicomweb"


def public_url(url: str, pacs_base: str, public_base: str) -> str:
    """Rewrite one PACS URL (any host, path below the PACS's DICOMweb root) to the facade."""
    root = urlsplit(pacs_base).path.rstrip("/") + "/"
    parts = urlsplit(url)
    if (parts.scheme or url.startswith("/")) and parts.path.startswith(root):
        return f"{public_base}/{parts.path[len(root):]}" + (f"?{parts.query}" if parts.query else "")
    return url


def _never(headers) -> bool:
    return False


def _needs_transfer_syntax(headers) -> bool:
    media, params = parse_media_type(multipart.header(headers, "Content-Type") or "")
    return media == "application/dicom" and "transfer-syntax" not in params


def part_header_rewriter(pacs_base: str, public_base: str, known_syntax: str | None = None,
                         choice: Choice | None = None):
    """Return ``(headers, body_start) -> headers`` for :func:`multipart.rewrite`.

    It points Content-Location at the facade and names the transfer syntax of DICOM parts
    (PS3.18 Section 8.7.3.5.2): *known_syntax* when the request fixed it, else the one in
    the part's File Meta Information. With a *choice*, a part other than it asked for
    raises :class:`NotAvailable` (see :func:`_check_stored`). It needs no app context, so it
    can run while the response streams.
    """
    def rewrite(headers, body_start):
        if choice is not None:
            _check_stored(headers, choice)
        return _part_headers(headers, body_start, pacs_base, public_base, known_syntax)
    return rewrite


def _part_headers(headers, body_start: bytes, pacs_base: str, public_base: str, known_syntax: str | None = None):
    result = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-location":
            value = public_url(value, pacs_base, public_base)
        elif lowered == "content-type" and (body_start or known_syntax):
            media, params = parse_media_type(value)
            if media == "application/dicom" and "transfer-syntax" not in params:
                uid = known_syntax or multipart.transfer_syntax_of(body_start)
                if uid:
                    value = f"{value}; transfer-syntax={uid}"
        result.append((name, value))
    return result


def _known_syntax(choice: Choice) -> str | None:
    """The transfer syntax every DICOM part has, when the request fixed it.

    Without a transfer-syntax parameter the PACS must send Explicit VR Little Endian
    (PS3.18 Section 8.7.3.5.2) — and answers an error, mapped to 406, when it cannot.
    Only ``*`` (as stored) leaves each part's syntax to be read from its File Meta.
    """
    if choice.part_type != "application/dicom" or choice.transfer_syntax == "*":
        return None
    return choice.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN


def _transcode_refused(status: int, choice: Choice | None) -> bool:
    """Whether a PACS error means it could not produce the pixel data or instances asked for.

    That is a transcoding to the syntax asked for (or to the default, Explicit VR Little
    Endian, PS3.18 Section 8.7.3.5.2), or frames as stored that cannot be frames as they
    are (Orthanc answers 500 for Big Endian and Deflated ones): not available, never
    mislabelled bytes. Whole instances as stored (``application/dicom`` with ``*``) need
    no transcoding, so a PACS error there stays an error.
    """
    return (choice is not None and (choice.multipart or choice.unwrap) and status in (400, 415, 500, 501)
            and not choice.transcode  # asked as stored: an error is the PACS's
            and (choice.transfer_syntax != "*" or choice.part_type != "application/dicom"))


def _merged_part(rewrite):
    """*rewrite*, dropping the Content-Length and Content-Location of the first of parts merged into one."""
    return lambda headers, body_start: [(name, value) for name, value in rewrite(headers, body_start)
                                        if name.lower() not in ("content-length", "content-location")]


def _only_part(rewrite):
    """*rewrite* for an answer of one part: a second part is an error."""
    seen = []

    def checked(headers, body_start):
        if seen:
            raise multipart.MultipartError("the answer came in more than one part")
        seen.append(True)
        return rewrite(headers, body_start)
    return checked


def _not_available(choice: Choice) -> str:
    if choice.stored_type:
        return f"the pixel data is not stored as {choice.stored_type}" + (
            f" in {choice.transfer_syntax}" if choice.transfer_syntax not in (None, "*") else "")
    return f"the instance is not available in {choice.transfer_syntax or 'Explicit VR Little Endian'}"


def _check_stored(headers, choice: Choice) -> None:
    """The part is what *choice* asked for, or not available.

    For a :attr:`Choice.stored_type` answer, the part is of that type (and syntax). A pixel
    data part that names a transfer syntax names the one asked for: a PACS may send another
    than the one asked for (Orthanc sends Explicit VR Little Endian for Big Endian).
    """
    media, params = parse_media_type(multipart.header(headers, "Content-Type") or "")
    asked = choice.transfer_syntax not in (None, "*")
    if choice.stored_type is not None:
        if media != choice.stored_type or (asked and params.get("transfer-syntax") != choice.transfer_syntax):
            raise NotAvailable(_not_available(choice))
    elif (asked and media != "application/dicom" and "transfer-syntax" in params
          and params["transfer-syntax"] != choice.transfer_syntax):
        raise NotAvailable(_not_available(choice))


_DIGITS = re.compile(r"[0-9]+")
#: Control characters, which no header value may hold except as a tab (RFC 9110 Section 5.5).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _relayed_headers(upstream) -> list[tuple[str, str]]:
    """The PACS's :data:`RELAYED_HEADERS` for a body relayed as is, made safe to relay.

    Content-Location is pointed at the facade (or dropped if it names anything else of the
    PACS's); a Content-Length that is not one number, or beside chunked framing, is dropped
    (the body is then framed by the server); other values with control characters, empty
    ones and repeated ones (but Content-Encoding, a list) are dropped (RFC 9110 Section 5.5).

    Raises
    ------
    PacsError
        If Content-Type or Content-Encoding has control characters, or Content-Type is
        repeated: the body could not be labelled (502).
    """
    relayed = []
    fields = getattr(upstream.raw, "headers", None)
    for name in RELAYED_HEADERS:
        value = upstream.headers.get(name)
        if not value:
            continue
        values = fields.getlist(name) if hasattr(fields, "getlist") and name != "Content-Encoding" else [value]
        if len(set(values)) == 1:
            value = values[0]  # the same value twice is that value (a Content-Encoding list is not)
        repeated = len(set(values)) > 1
        if _CONTROL.search(value) or repeated:
            if name in _BODY_HEADERS:
                upstream.close()
                raise PacsError(f"the PACS answered an invalid {name}")
            continue  # e.g. two Content-Locations, joined into one string naming the PACS
        if name == "Content-Length" and "Transfer-Encoding" in upstream.headers:
            continue  # chunked: the length is not the body's (RFC 9112 Section 6.3)
        if name == "Content-Length" and not _DIGITS.fullmatch(value.strip()):
            continue  # "4, 4" from a repeated field, or anything else that is not one length
        if name == "Content-Location":
            public = _public_base()
            value = public_url(value, get_pacs().base_url, public)
            if not value.startswith(public + "/"):
                continue
        relayed.append((name, value.strip() if name == "Content-Length" else value))
    return relayed


def _copy_headers(upstream, response: Response, names) -> None:
    """Copy the PACS's *names* headers that it sent to *response*; a value with control
    characters is dropped rather than relayed (RFC 9110 Section 5.5)."""
    for name in names:
        value = upstream.headers.get(name)
        if value is not None and not _CONTROL.search(value):
            response.headers[name] = value


def upstream_failure(upstream, choice: Choice | None) -> Response:
    """Answer a PACS error status without relaying its body (it may name the PACS).

    A refused transcoding never gets here: :func:`relay` raises :class:`NotAvailable` for it.
    """
    status = upstream.status_code
    upstream.close()
    if status in (404, 410):
        return error_response(status, "not found")
    if choice is not None and not (choice.multipart or choice.unwrap) and status == 400:
        # A rendering the PACS refuses for a valid path and media type: nothing renderable
        # there (a structured report, a study without images), PS3.18 Section 10.4.1.1.3.
        return error_response(404, "nothing to render here")
    if status == 503:
        return error_response(503, "the PACS is unavailable", {"Retry-After": "5"})
    if status == 504:
        return error_response(504, "the PACS did not answer in time")
    if status >= 500:
        return error_response(502, f"the PACS failed ({status})")
    if status == 406:
        return error_response(406, "the PACS cannot serve this media type")
    return error_response(status if 400 <= status < 500 else 502, f"the PACS answered {status}")


#: Largest PACS answer (bytes, from its Content-Length) read whole before relaying.
SMALL_ANSWER = 1 << 20


def _is_small(upstream) -> bool:
    """Whether the PACS answer says it is at most :data:`SMALL_ANSWER` bytes (a Content-Length
    beside chunked framing says nothing: RFC 9112 Section 6.3)."""
    length = upstream.headers.get("Content-Length", "").strip()
    return ("Transfer-Encoding" not in upstream.headers and bool(_DIGITS.fullmatch(length))
            and int(length) <= SMALL_ANSWER)


def _finished(upstream) -> None:
    """Hand a completely read PACS connection back to the pool for the next request.

    ``requests`` only does that for bodies it read itself; for ``raw`` reads its ``close()``
    would drop the connection, and every proxied request would open a new one.
    """
    upstream._content_consumed = True
    upstream.raw.release_conn()


def _read_whole(upstream) -> bytes:
    """Read a small answer in one go (``.content`` would read 10 KB at a time) and release it."""
    try:
        data = upstream.raw.read(decode_content=False)
    except READ_ERRORS as exc:
        raise broken_answer(upstream, exc) from exc
    _finished(upstream)
    return data


def _stream(upstream):
    """Relay the body chunk by chunk; a client that goes away closes the PACS connection."""
    try:
        yield from upstream.raw.stream(CHUNK, decode_content=False)
    except READ_ERRORS as exc:
        raise broken_answer(upstream, exc) from exc
    except BaseException:
        upstream.close()
        raise
    _finished(upstream)


def _reader(upstream) -> multipart.Reader:
    """``read(n)`` on the PACS answer as sent (no decoding), releasing the connection at its end.

    ``urllib3``'s ``read(n, decode_content=False)`` hands back what ``http.client`` read,
    uncopied; a failure closes the connection and says so as a :class:`PacsError`.
    """
    def read(size: int) -> bytes:
        try:
            data = upstream.raw.read(size, decode_content=False)
        except READ_ERRORS as exc:
            raise broken_answer(upstream, exc) from exc
        if not data:
            _finished(upstream)
        return data

    return read


def _read_ahead(read: multipart.Reader, size: int) -> bytes:
    """Up to *size* bytes from *read* (fewer only at its end)."""
    pieces, have = [], 0
    while have < size:
        data = read(size - have)
        if not data:
            break
        pieces.append(data)
        have += len(data)
    return b"".join(pieces)


def _parts_started(head: bytes, boundary: str) -> int:
    """Parts that start in *head*, the beginning of a multipart body (all of it, or cut anywhere)."""
    seen = []
    try:
        for _ in multipart.rewrite(io.BytesIO(head).read, boundary, lambda headers, start: seen.append(1) or headers):
            pass
    except multipart.MultipartError:
        pass  # cut short: the parts seen so far
    return len(seen)


def _written_syntax(choice: Choice) -> str | None:
    """What the facade makes DICOM parts into: :attr:`Choice.target_syntax` when it transcodes,
    ``*`` for instances as stored (a bare dataset made a Part-10 file), else ``None``."""
    if choice.transcode:
        return choice.target_syntax
    if choice.part_type == "application/dicom" and choice.transfer_syntax == "*":
        return "*"
    return None


def _peek(choice: Choice):
    """Which parts' first bytes to hold: DICOM parts whose syntax must be named, or checked
    for transcoding (:mod:`fhir_facade.dicomweb.transcoded`)."""
    if _written_syntax(choice):
        return transcoded.is_dicom_part
    return _needs_transfer_syntax if choice.transfer_syntax == "*" else _never


def _transcoded_part(part, start: bytes, body: Iterator[bytes], choice: Choice, small: bool):
    """The single part of an instance answer as :func:`_written_syntax` says, transcoded if it
    is not yet: ``(headers, start, body, small)``, decided before anything is sent.

    Raises
    ------
    NotAvailable
        If the instance cannot be transcoded.
    """
    syntax = _written_syntax(choice)
    if not transcoded.needs_transcoding(part, start, syntax):
        return part, start, body, small
    pieces, size = [], 0
    for piece in body:
        size += len(piece)
        if size > MAX_INSTANCE_BYTES:
            raise NotAvailable(f"the instance is larger than {MAX_INSTANCE_BYTES} bytes: it is not transcoded")
        pieces.append(piece)
    data = b"".join(pieces)
    try:
        data = transcode_instance(data, syntax)
    except TranscodeError as exc:
        if syntax == "*":
            return part, start, iter([data]), small  # as stored, as the PACS sent it
        raise NotAvailable(f"the instance is not available in {syntax}: {exc}") from exc
    return transcoded.relabelled(part, data), data[:multipart.META_PEEK_BYTES], [data], True


def _started(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """*chunks* with its first item already produced (errors in it raise here, not mid-answer)."""
    try:
        first = next(chunks)
    except StopIteration:
        return iter(())
    return itertools.chain([first], chunks)


def relay(path: str, params: list[tuple[str, str]], choice: Choice,
          explain: Callable[[], None] | None = None, merge: bool = False,
          single: bool = False) -> Response:
    """Stream the PACS answer to *path* in the representation *choice* names.

    *explain*, when given, runs if the PACS answers an error, and may raise a more exact one.
    With *merge*, the parts of the PACS answer become one part (frames as one Pixel Data
    value). With *single*, the answer must be one part, else :class:`NotAvailable`: its
    first :data:`SMALL_ANSWER` bytes are read before anything is sent, and a second part
    that starts within them (or at all, in a shorter answer) is refused; one that starts
    later breaks the answer off. Encapsulated Pixel Data is an offset table and fragments:
    its second part always starts within them.
    """
    upstream = get_pacs().get(path, params=params, headers={"Accept": choice.upstream_accept,
                                                             "Accept-Encoding": "identity"}, stream=True)
    if upstream.status_code == 204:
        upstream.close()
        return Response(status=204)
    if upstream.status_code != 200:
        if explain is not None and upstream.status_code in (400, 404, 500, 501):
            upstream.close()
            explain()
        if _transcode_refused(upstream.status_code, choice):
            upstream.close()
            raise NotAvailable(_not_available(choice))
        return upstream_failure(upstream, choice)
    content_type = upstream.headers.get("Content-Type", "")
    if not (choice.multipart or choice.unwrap):
        # Its first chunk is read before the status goes out: a PACS that fails within it
        # (all of a rendered image, mostly) gets its 502 or 504, not a broken 200.
        headers = _relayed_headers(upstream)
        if _is_small(upstream):
            data = _read_whole(upstream)  # a body cut short raises here: 502, not a short 200
            response = Response([data], status=200)
            headers = [(name, value) for name, value in headers if name != "Content-Length"]
            headers.append(("Content-Length", str(len(data))))
        else:
            response = Response(_started(_stream(upstream)), status=200)
        response.headers.pop("Content-Type", None)
        for name, value in headers:
            response.headers[name] = value
        response.call_on_close(upstream.close)
        return response
    media, params = parse_media_type(content_type)
    boundary = params.get("boundary")
    if media != "multipart/related" or not boundary:
        upstream.close()
        return error_response(502, "the PACS answered something other than multipart/related")
    # A small answer (a frame, an instance of a few hundred KB) is read whole and sent with a
    # Content-Length: one write instead of several chunked ones, which is most of what a
    # proxied frame costs beyond the PACS's own time. Memory stays bounded.
    small = _is_small(upstream)
    splicer = None
    source = io.BytesIO(_read_whole(upstream)).read if small else _reader(upstream)
    if single:
        upstream_read = source  # the lambda below must not see *source* reassigned
        head = _read_ahead(upstream_read, SMALL_ANSWER)
        if _parts_started(head, boundary) != 1:
            upstream.close()
            raise NotAvailable("the Pixel Data is compressed and the PACS cannot decompress it")
        if small or len(head) < SMALL_ANSWER:
            small, source = True, io.BytesIO(head).read
        else:
            source = multipart.chunk_reader(itertools.chain([head], iter(lambda: upstream_read(CHUNK), b"")))
    if choice.unwrap:
        try:
            part, start, body = multipart.unwrap(source, boundary, merge=merge, peek=_peek(choice))
        except multipart.MultipartError as exc:
            upstream.close()
            raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        try:
            _check_stored(part, choice)
            if _written_syntax(choice):
                part, start, body, small = _transcoded_part(part, start, body, choice, small)
        except NotAvailable:
            upstream.close()
            raise
        except multipart.MultipartError as exc:
            upstream.close()
            raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        # Named like a part of a multipart answer (PS3.18 Section 8.7.3.5.2): the Content-Type says the syntax.
        part = _part_headers(part, start, get_pacs().base_url, _public_base(), _known_syntax(choice))
        try:
            # As for a multipart answer: a PACS that breaks off within the first part's body
            # gets a 502 from here, not a server error page.
            body = [b"".join(body)] if small else _started(body)
        except multipart.MultipartError as exc:
            upstream.close()
            raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        response = Response(body, status=200)
        response.headers.pop("Content-Type", None)
        response.headers["Content-Type"] = multipart.header(part, "Content-Type") or choice.part_type
        part_length = multipart.content_length(part)  # None unless one number: gunicorn's int() would fail
        if small:
            response.headers["Content-Length"] = str(len(body[0]))
        elif part_length is not None and not merge:
            response.headers["Content-Length"] = str(part_length)
    else:
        known = _known_syntax(choice)
        # A large answer's part bodies go from socket to socket in the kernel where the server allows it.
        # (Not after a read-ahead: the bytes it holds come before the socket's.)
        splicer = None if small or single else zerocopy.splicer_for(upstream, request.environ, get_pacs().timeout)
        # A boundary of our own: the PACS's may be a fixed word that a part body holds (DW-1).
        own_boundary = f"facade-{secrets.token_hex(16)}"
        rewriter = part_header_rewriter(get_pacs().base_url, _public_base(), known, choice)
        replace = None
        if _written_syntax(choice):
            relabel = part_header_rewriter(get_pacs().base_url, _public_base(), known)
            replace = transcoded.replacer(_written_syntax(choice), lambda headers: relabel(headers, b""))
        if merge:
            rewriter = _merged_part(rewriter)
        if single:
            rewriter = _only_part(rewriter)
        body = multipart.rewrite(source, boundary, rewriter, peek=_peek(choice),
                                 direct=splicer.body if splicer is not None else None, out_boundary=own_boundary,
                                 merge=merge, replace=replace, max_replaced=MAX_INSTANCE_BYTES)
        part_type, part_params = parse_media_type(params.get("type", choice.part_type))
        value = f'multipart/related; type="{part_type}"'
        syntax = part_params.get("transfer-syntax") or (choice.transfer_syntax if choice.transfer_syntax != "*"
                                                        else None)
        if choice.transcode:
            syntax = choice.target_syntax  # not the "*" the PACS was asked for
        if syntax:
            value += f"; transfer-syntax={syntax}"
        try:
            # The first part's headers are read before the answer starts: a PACS that breaks
            # off at once gets a 502 from here, not a server error page after a 200.
            body = [b"".join(body)] if small else _started(body)
        except multipart.MultipartError as exc:
            upstream.close()
            raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        except NotAvailable:
            upstream.close()
            raise
        except TranscodeError as exc:
            # The first part cannot be had in the syntax asked for: nothing was sent yet.
            upstream.close()
            raise NotAvailable(f"the instance is not available in {choice.target_syntax}: {exc}") from exc
        response = Response(body, status=200)
        if small:
            response.headers["Content-Length"] = str(len(body[0]))
        response.headers.pop("Content-Type", None)
        response.headers["Content-Type"] = f"{value}; boundary={own_boundary}"
    _copy_headers(upstream, response, ("Warning", "Last-Modified", "ETag"))
    if "ETag" in response.headers and not response.headers["ETag"].startswith("W/"):
        # Same parts, other framing (or one part unwrapped): only weakly the PACS's
        # representation (RFC 9110 Section 8.8.1).
        response.headers["ETag"] = "W/" + response.headers["ETag"]
    response.call_on_close(upstream.close)
    if splicer is not None:
        response.call_on_close(splicer.close)
    return response


def rewrite_urls(datasets: list, pacs_base: str, public_base: str) -> list:
    """Point every RetrieveURL (0008,1190) and BulkDataURI in DICOM JSON at the facade.

    Parameters
    ----------
    datasets : list of dict
        DICOM JSON (PS3.18 Annex F); changed in place.
    pacs_base : str
        The PACS's DICOMweb base; URLs whose path starts with its path are rewritten,
        whatever host the PACS wrote (it often names itself ``localhost``).
    public_base : str
        The facade's public DICOMweb base.

    Returns
    -------
    list
        *datasets*.
    """
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "BulkDataURI" and isinstance(value, str):
                    node[key] = public_url(value, pacs_base, public_base)
                elif key == dj.TAGS["RetrieveURL"] and isinstance(value, dict):
                    value["Value"] = [public_url(v, pacs_base, public_base) if isinstance(v, str) else v
                                      for v in value.get("Value", [])]
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(datasets)
    return datasets


def json_answer(path: str, params: list[tuple[str, str]], patient_filter: str | None = None,
                patient_id: str | None = None, paging: list[tuple[str, str]] = ()) -> Response:
    """Relay a DICOM JSON answer with its URLs rewritten (and rows of other patients dropped).

    Parameters
    ----------
    path : str
        PACS path below its DICOMweb base.
    params : list of (str, str)
        Query parameters for the PACS.
    patient_filter : str, optional
        The FHIR Patient id whose rows alone are relayed; rows that may have been
        re-encoded lossily are confirmed from metadata first (:mod:`fhir_facade.pacs.exact`).
    patient_id : str, optional
        That patient's exact PatientID (skips confirming rows that cannot be theirs).
    paging : list of (str, str)
        ``limit`` and ``offset`` (PS3.18 Section 8.3.4.4) to apply here, after filtering,
        when the PACS could not be asked for the patient alone.
    """
    upstream = get_pacs().get(path, params=params, headers={"Accept": DICOM_JSON, "Accept-Encoding": "identity"})
    if upstream.status_code == 204 or (upstream.status_code == 200 and not upstream.content.strip()):
        return Response(status=204)
    if upstream.status_code != 200:
        return upstream_failure(upstream, None)
    datasets = dicom_json_array(upstream)
    if patient_filter is not None:
        exact = current_app.extensions["exact"]
        datasets = [ds for ds in exact.confirm(datasets, ... if patient_id is None else patient_id)
                    if to_fhir_id(dj.patient_id(ds)) == patient_filter]
        datasets = page(datasets, dict(paging))
    rewrite_urls(datasets, get_pacs().base_url, _public_base())
    response = Response(json.dumps(datasets, ensure_ascii=False, separators=(",", ":")), status=200,
                        mimetype=DICOM_JSON)
    _copy_headers(upstream, response, ("Warning",))
    return response


def page(datasets: list, paging: dict) -> list:
    """Apply QIDO-RS ``offset`` and ``limit`` (PS3.18 Section 8.3.4.4) to *datasets*."""
    offset = int(paging.get("offset", 0))
    if "limit" in paging and int(paging["limit"]) > 0:
        return datasets[offset:offset + int(paging["limit"])]
    return datasets[offset:]
