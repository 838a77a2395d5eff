"""The DICOMweb proxy blueprint (``/dicomweb``): WADO-RS and QIDO-RS, authorized and streamed.

Every request is authorized by :mod:`smart.authz` before the PACS is asked anything. Bodies
of retrievals pass through byte for byte, chunk by chunk; DICOM JSON answers (QIDO-RS and
metadata) are rewritten so that RetrieveURL (0008,1190) and BulkDataURI point at the facade.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
import urllib3
from flask import Blueprint, Response, current_app, request

from smart import authz

from . import dicom_json as dj
from . import multipart
from .lookups import UnknownStudy, check_study_access, get_lookups
from .negotiation import EXPLICIT_VR_LITTLE_ENDIAN, Choice, NotAcceptable, choose, parse_media_type
from .pacs import DICOM_JSON, PacsError, get_pacs
from .patient_ids import to_fhir_id, to_patient_id
from .search_params import is_uid

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

CHUNK = 1024 * 1024
#: Response headers relayed from the PACS (hop-by-hop headers, RFC 9110 §7.6.1, never are).
RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Content-Location", "Warning",
                   "ETag", "Last-Modified", "Cache-Control")
#: Query parameters relayed to the PACS (PS3.18 Section 8.3.4, 8.3.5, 10.4.1).
QIDO_PARAMS_RE = re.compile(r"^([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*)(\.([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*))*$")
RESERVED_QUERY = frozenset({"includefield", "limit", "offset", "fuzzymatching", "charset",
                            "annotation", "quality", "viewport", "window", "iccprofile"})


class DicomwebError(Exception):
    """An error answered by the proxy itself (PS3.18 Section 8.6 status codes)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    body = json.dumps({"status": status, "message": message})
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.errorhandler(DicomwebError)
def _dicomweb_error(exc: DicomwebError):
    return _error(exc.status, exc.message)


@bp.errorhandler(authz.AuthorizationError)
def _authz_error(exc: authz.AuthorizationError):
    # RFC 6750 §3: 401 and 403 (insufficient_scope) both carry the challenge.
    headers = {"WWW-Authenticate": exc.www_authenticate(f"{current_app.config['FACADE_PUBLIC_URL']}/dicomweb")}
    return _error(exc.status, exc.description, headers)


@bp.errorhandler(PacsError)
def _pacs_error(exc: PacsError):
    headers = {"Retry-After": "5"} if exc.status == 503 else {}
    return _error(exc.status, str(exc), headers)


# --- path and query validation ------------------------------------------------------------

#: Path shapes below ``studies/{StudyInstanceUID}`` (PS3.18 Tables 10.4.1-1 and 10.6.1-1) ->
#: (negotiation kind, what the path names). ``uid``, ``framelist`` and ``tag`` are placeholders.
RESOURCE_PATHS = {
    (): ("study", "study"),
    ("metadata",): ("json", "metadata"),
    ("rendered",): ("rendered", "study"),
    ("thumbnail",): ("rendered", "study"),
    ("series",): ("json", "qido"),
    ("instances",): ("json", "qido"),
    ("series", "uid"): ("series", "series"),
    ("series", "uid", "metadata"): ("json", "metadata"),
    ("series", "uid", "rendered"): ("rendered", "series"),
    ("series", "uid", "thumbnail"): ("rendered", "series"),
    ("series", "uid", "instances"): ("json", "qido"),
    ("series", "uid", "instances", "uid"): ("instance", "instance"),
    ("series", "uid", "instances", "uid", "metadata"): ("json", "metadata"),
    ("series", "uid", "instances", "uid", "rendered"): ("rendered", "instance"),
    ("series", "uid", "instances", "uid", "thumbnail"): ("rendered", "instance"),
    ("series", "uid", "instances", "uid", "frames", "framelist"): ("frames", "frames"),
    ("series", "uid", "instances", "uid", "frames", "framelist", "rendered"): ("rendered", "frames"),
    ("series", "uid", "instances", "uid", "frames", "framelist", "thumbnail"): ("rendered", "frames"),
    ("series", "uid", "instances", "uid", "bulkdata", "tag"): ("bulkdata", "bulkdata"),
    ("series", "uid", "instances", "uid", "bulk", "tag"): ("bulkdata", "bulkdata"),
}
_FRAMES = re.compile(r"[0-9]+(,[0-9]+)*")
_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")


def classify(segments: list[str]) -> tuple[str, str]:
    """Validate the path below ``studies/{uid}``; return (negotiation kind, resource).

    Raises
    ------
    DicomwebError
        404 for a path that is not a DICOMweb resource, 400 for a malformed UID or frame list
        (PS3.18 Section 8.6.1).
    """
    shape: list[str] = []
    i = 0
    while i < len(segments):
        segment = segments[i]
        previous = shape[-1] if shape else None
        if previous in ("series", "instances") and len(shape) in (1, 3):
            if not is_uid(segment):
                raise DicomwebError(400, f"{segment!r} is not a valid UID")
            shape.append("uid")
        elif previous == "frames":
            if not _FRAMES.fullmatch(segment) or any(int(n) < 1 for n in segment.split(",")):
                raise DicomwebError(400, f"{segment!r} is not a list of frame numbers (1-based)")
            shape.append("framelist")
        elif previous in ("bulkdata", "bulk"):
            if not _TAG_PATH.fullmatch("/".join(segments[i:])):
                raise DicomwebError(404, "unknown bulk data path")
            shape.append("tag")
            break
        else:
            shape.append(segment)
        i += 1
    found = RESOURCE_PATHS.get(tuple(shape))
    if found is None:
        raise DicomwebError(404, "not a DICOMweb resource")
    return found


def _query() -> list[tuple[str, str]]:
    params = []
    for name, value in request.args.items(multi=True):
        if name == "accept":  # PS3.18 Section 8.3.3.1: decided here, like the Accept header
            continue
        if name.lower() in ("limit", "offset") and not value.isdigit():
            raise DicomwebError(400, f"{name} must be a non-negative integer")
        if name.lower() in RESERVED_QUERY or QIDO_PARAMS_RE.fullmatch(name):
            params.append((name, value))
        else:
            raise DicomwebError(400, f"invalid query parameter {name!r}")
    return params


#: Attributes ``includefield=all`` adds per QIDO-RS level, because some PACS (Orthanc 1.10) leave
#: attributes out of "all" that they return when named (PS3.18 Section 8.3.4.3).
ALL_FIELDS = {
    "studies": ("00081030", "00080050", "00080090", "00080201", "00081060", "00100021", "00100030", "00100040",
                "00200010", "00080061", "00201206", "00201208"),
    "series": ("0008103E", "00080060", "00200011", "00180015", "00200060", "00080021", "00080031",
               "00201209"),
    "instances": ("00080016", "00200013", "00280008", "00280010", "00280011", "00280100"),
}


def normalize_includefield(params: list[tuple[str, str]], level: str) -> list[tuple[str, str]]:
    """One ``includefield`` per attribute, in order; ``all`` made to mean all at *level*.

    The comma form and the repeated form become the same query, and ``X&all`` equals
    ``all`` (field case DW-8).
    """
    fields: list[str] = []
    others = []
    for name, value in params:
        if name.lower() == "includefield":
            fields += [f.strip() for f in value.split(",") if f.strip()]
        else:
            others.append((name, value))
    if not fields:
        return others
    if any(f.lower() == "all" for f in fields):
        fields = ["all", *ALL_FIELDS.get(level, ())]
    unique = list(dict.fromkeys(fields))
    return others + [("includefield", f) for f in unique]


def qido_level(path: str) -> str:
    """The QIDO-RS level a path queries: ``studies``, ``series`` or ``instances``."""
    return path.rstrip("/").rsplit("/", 1)[-1]


# --- authorization ------------------------------------------------------------------------

def authorize_study(study_uid: str) -> None:
    """Check the request's token may read study *study_uid* (every patient filed under it).

    Raises
    ------
    Unauthorized, Forbidden
        From :mod:`smart.authz`.
    DicomwebError
        404 if the PACS knows no such study.
    """
    grant = authz.require("ImagingStudy", "r")
    try:
        check_study_access(grant, study_uid)
    except UnknownStudy as exc:
        raise DicomwebError(404, "study not found") from exc


# --- relaying -----------------------------------------------------------------------------

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


def part_header_rewriter(pacs_base: str, public_base: str, known_syntax: str | None = None):
    """Return ``(headers, body_start) -> headers`` for :func:`multipart.rewrite`.

    It points Content-Location at the facade and names the transfer syntax of DICOM parts
    (PS3.18 Section 8.7.3.5.2): *known_syntax* when the request fixed it, else the one in
    the part's File Meta Information. It needs no app context, so it can run while the
    response streams.
    """
    return lambda headers, body_start: _part_headers(headers, body_start, pacs_base, public_base, known_syntax)


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


def _upstream_failure(upstream, choice: Choice | None) -> Response:
    """Answer a PACS error status without relaying its body (it may name the PACS)."""
    status = upstream.status_code
    upstream.close()
    if choice is not None and (choice.multipart or choice.unwrap) and choice.transfer_syntax != "*" \
            and status in (400, 415, 500, 501):
        # The PACS could not transcode to the syntax asked for (or to the default, Explicit VR
        # Little Endian, PS3.18 Section 8.7.3.5.2): not available, never mislabelled bytes.
        wanted = choice.transfer_syntax or "Explicit VR Little Endian"
        return _error(406, f"the instance is not available in {wanted}")
    if status in (404, 410):
        return _error(status, "not found")
    if choice is not None and not (choice.multipart or choice.unwrap) and status == 400:
        # A rendering the PACS refuses for a valid path and media type: nothing renderable
        # there (a structured report, a study without images), PS3.18 Section 10.4.1.1.3.
        return _error(404, "nothing to render here")
    if status == 503:
        return _error(503, "the PACS is unavailable", {"Retry-After": "5"})
    if status == 504:
        return _error(504, "the PACS did not answer in time")
    if status >= 500:
        return _error(502, f"the PACS failed ({status})")
    if status == 406:
        return _error(406, "the PACS cannot serve this media type")
    return _error(status if 400 <= status < 500 else 502, f"the PACS answered {status}")


#: Largest PACS answer (bytes, from its Content-Length) read whole before relaying.
SMALL_ANSWER = 1 << 20


def _is_small(upstream) -> bool:
    try:
        return int(upstream.headers.get("Content-Length", "")) <= SMALL_ANSWER
    except ValueError:
        return False


def _finished(upstream) -> None:
    """Hand a completely read PACS connection back to the pool for the next request.

    ``requests`` only does that for bodies it read itself; for ``raw`` reads its ``close()``
    would drop the connection, and every proxied request would open a new one.
    """
    upstream._content_consumed = True
    upstream.raw.release_conn()


def _stream(upstream):
    """Relay the body chunk by chunk; a client that goes away closes the PACS connection."""
    try:
        yield from upstream.raw.stream(CHUNK, decode_content=False)
    except BaseException:
        upstream.close()
        raise
    _finished(upstream)


def _relay(path: str, params: list[tuple[str, str]], choice: Choice,
           explain: Callable[[], None] | None = None) -> Response:
    """Stream the PACS answer to *path* in the representation *choice* names.

    *explain*, when given, runs if the PACS answers an error, and may raise a more exact one.
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
        return _upstream_failure(upstream, choice)
    content_type = upstream.headers.get("Content-Type", "")
    if not (choice.multipart or choice.unwrap):
        response = Response(_stream(upstream), status=200)
        response.headers.pop("Content-Type", None)
        for name in RELAYED_HEADERS:
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        response.call_on_close(upstream.close)
        return response
    media, params = parse_media_type(content_type)
    boundary = params.get("boundary")
    if media != "multipart/related" or not boundary:
        upstream.close()
        return _error(502, "the PACS answered something other than multipart/related")
    chunks = _stream(upstream)
    if _is_small(upstream):
        # A small answer (a frame, an instance of a few hundred KB) is read whole and sent
        # with a Content-Length: one write instead of several chunked ones, which is most of
        # what a proxied frame costs beyond the PACS's own time. Memory stays bounded.
        try:
            # One read of Content-Length bytes (``.content`` would read 10 KB at a time).
            chunks = [upstream.raw.read(decode_content=False)]
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            upstream.close()
            raise PacsError("the PACS broke off its answer") from exc
        _finished(upstream)
    if choice.unwrap:
        try:
            part, body = multipart.unwrap(chunks, boundary)
        except multipart.MultipartError as exc:
            upstream.close()
            raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        part = _part_headers(part, b"", get_pacs().base_url, _public_base(), _known_syntax(choice))
        response = Response(body, status=200)
        response.headers.pop("Content-Type", None)
        response.headers["Content-Type"] = multipart.header(part, "Content-Type") or choice.part_type
        if multipart.header(part, "Content-Length"):
            response.headers["Content-Length"] = multipart.header(part, "Content-Length")
    else:
        known = _known_syntax(choice)
        body = multipart.rewrite(chunks, boundary,
                                 part_header_rewriter(get_pacs().base_url, _public_base(), known),
                                 peek=_needs_transfer_syntax if choice.transfer_syntax == "*" else _never)
        part_type, part_params = parse_media_type(params.get("type", choice.part_type))
        value = f'multipart/related; type="{part_type}"'
        syntax = part_params.get("transfer-syntax") or (choice.transfer_syntax if choice.transfer_syntax != "*"
                                                        else None)
        if syntax:
            value += f"; transfer-syntax={syntax}"
        if isinstance(chunks, list):
            try:
                body = [b"".join(body)]
            except multipart.MultipartError as exc:
                raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc
        response = Response(body, status=200)
        if isinstance(chunks, list):
            response.headers["Content-Length"] = str(len(body[0]))
        response.headers.pop("Content-Type", None)
        response.headers["Content-Type"] = f'{value}; boundary="{boundary}"' if not _TOKEN.fullmatch(boundary) \
            else f"{value}; boundary={boundary}"
    for name in ("Warning", "Last-Modified", "ETag"):
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    response.call_on_close(upstream.close)
    return response


_TOKEN = re.compile(r"[A-Za-z0-9'()+_,\-./:=?]+")


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


def _json_answer(path: str, params: list[tuple[str, str]], patient_filter: str | None = None) -> Response:
    """Relay a DICOM JSON answer with its URLs rewritten (and rows of other patients dropped)."""
    upstream = get_pacs().get(path, params=params, headers={"Accept": DICOM_JSON, "Accept-Encoding": "identity"})
    if upstream.status_code == 204 or (upstream.status_code == 200 and not upstream.content.strip()):
        return Response(status=204)
    if upstream.status_code != 200:
        return _upstream_failure(upstream, None)
    try:
        datasets = upstream.json()
    except ValueError as exc:
        raise PacsError("the PACS answered with invalid DICOM JSON") from exc
    if not isinstance(datasets, list):
        raise PacsError("the PACS answered with DICOM JSON that is not an array")
    if patient_filter is not None:
        datasets = [ds for ds in datasets if isinstance(ds, dict)
                    and to_fhir_id(dj.text(ds, "PatientID")) == patient_filter]
    rewrite_urls(datasets, get_pacs().base_url, _public_base())
    response = Response(json.dumps(datasets, ensure_ascii=False, separators=(",", ":")), status=200,
                        mimetype=DICOM_JSON)
    if "Warning" in upstream.headers:
        response.headers["Warning"] = upstream.headers["Warning"]
    return response


def _negotiate(kind: str, frames: int = 0) -> Choice:
    try:
        accept = request.args.get("accept") or request.headers.get("Accept")
        return choose(kind, accept, frames=frames)
    except NotAcceptable as exc:
        raise DicomwebError(406, f"none of the accepted media types can be served: {exc.accept}") from exc


# --- routes -------------------------------------------------------------------------------

QIDO_LEVELS = {"studies": "studies", "series": "series", "instances": "instances"}


@bp.get("/studies")
@bp.get("/series")
@bp.get("/instances")
def search_all():
    """QIDO-RS searches at the top level (PS3.18 Section 10.6), limited to the token's patient."""
    grant = authz.require("ImagingStudy", "s")
    params = _query()
    _negotiate("json")
    compartment = grant.compartment("ImagingStudy", "s")
    if compartment is not None:
        patient_id = to_patient_id(compartment)
        params = [(n, v) for n, v in params if n not in ("PatientID", dj.TAGS["PatientID"])]
        params.append(("PatientID", patient_id if patient_id is not None else ""))
        params.append(("includefield", dj.TAGS["PatientID"]))
    level = qido_level(request.path)
    return _json_answer(QIDO_LEVELS[level], normalize_includefield(params, level), patient_filter=compartment)


@bp.get("/studies/<path:rest>")
def study_resource(rest: str):
    """Every resource below a study: WADO-RS, metadata, frames, rendered, QIDO-RS (PS3.18 Section 10.4)."""
    segments = rest.split("/")
    study_uid = segments[0]
    if not is_uid(study_uid):
        authz.require("ImagingStudy", "r")
        raise DicomwebError(400, f"{study_uid!r} is not a valid UID")
    kind, resource = classify(segments[1:])
    params = _query()
    authorize_study(study_uid)
    # segments: StudyUID, "series", SeriesUID, "instances", SOPInstanceUID, "frames", list, ...
    frame_numbers = [int(n) for n in segments[6].split(",")] if len(segments) > 6 and segments[5] == "frames" else []
    choice = _negotiate(kind, frames=len(frame_numbers))
    path = "studies/" + "/".join(segments)
    if kind == "json":
        if resource == "qido":
            params = normalize_includefield(params, qido_level(path))
        return _json_answer(path, params)
    explain = None
    if len(segments) >= 5 and (frame_numbers or kind == "rendered"):
        explain = lambda: _explain_pixel_failure(study_uid, segments[2], segments[4], frame_numbers)  # noqa: E731
    return _relay(path, params, choice, explain)


def _explain_pixel_failure(study_uid: str, series_uid: str, sop_uid: str, frame_numbers: list[int]) -> None:
    """After the PACS refused a frames or rendered request, answer 404 where PS3.18 wants it.

    Orthanc answers 400 for a frame past NumberOfFrames and for an instance without
    pixels; PS3.18 Section 10.4.1.3.3 (frames) wants 404. Looked up only on failure, so the
    common path costs no extra query.

    Raises
    ------
    DicomwebError
        404 when the instance is missing, has no pixel data or lacks a frame asked for.
    """
    info = get_lookups().instance(study_uid, series_uid, sop_uid)
    if info is None:
        raise DicomwebError(404, "instance not found")
    if not info.has_pixels:
        raise DicomwebError(404, "the instance has no pixel data")
    missing = [n for n in frame_numbers if n > info.number_of_frames]
    if missing:
        raise DicomwebError(404, f"frame {missing[0]} does not exist (NumberOfFrames is {info.number_of_frames})")


def http_error(exc) -> Response:
    """Render a werkzeug HTTP error under ``/dicomweb``."""
    return _error(exc.code or 500, exc.description or exc.name)


def internal_error(exc: Exception) -> Response:
    """Render an unexpected failure as a bare 500 without any trace."""
    log.exception("unexpected error in the DICOMweb proxy")
    return _error(500, "internal error")
