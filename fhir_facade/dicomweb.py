"""The DICOMweb proxy blueprint (``/dicomweb``): WADO-RS and QIDO-RS, authorized and streamed.

Every request is authorized by :mod:`smart.authz` before the PACS is asked anything. Bodies
of retrievals pass through byte for byte, chunk by chunk; DICOM JSON answers (QIDO-RS and
metadata) are rewritten so that RetrieveURL (0008,1190) and BulkDataURI point at the facade.
"""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request, stream_with_context

from smart import authz

from . import dicom_json as dj
from .pacs import DICOM_JSON, PacsError, get_pacs
from .patient_ids import to_fhir_id, to_patient_id
from .search import is_uid
from .studies import StudyNotFound, get_studies

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

CHUNK = 256 * 1024
#: Response headers relayed from the PACS (hop-by-hop headers, RFC 9110 §7.6.1, never are).
RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Content-Location", "Warning",
                   "ETag", "Last-Modified", "Cache-Control")
#: Query parameters relayed to the PACS (PS3.18 Section 8.3.4, 8.3.5, 10.4.1).
QIDO_PARAMS_RE = re.compile(r"^([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*)(\.([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*))*$")
RESERVED_QUERY = frozenset({"includefield", "limit", "offset", "fuzzymatching", "charset", "accept",
                            "annotation", "quality", "viewport", "window", "iccprofile"})

#: Path shapes below ``studies/{StudyInstanceUID}`` (PS3.18 Table 10.4.1-1, 10.6.1-1).
#: Each is a tuple of literal words and ``uid`` / ``frames`` placeholders.
RESOURCE_PATHS = {
    (): "wado",
    ("metadata",): "json",
    ("rendered",): "wado",
    ("thumbnail",): "wado",
    ("series",): "qido",
    ("instances",): "qido",
    ("series", "uid"): "wado",
    ("series", "uid", "metadata"): "json",
    ("series", "uid", "rendered"): "wado",
    ("series", "uid", "thumbnail"): "wado",
    ("series", "uid", "instances"): "qido",
    ("series", "uid", "instances", "uid"): "wado",
    ("series", "uid", "instances", "uid", "metadata"): "json",
    ("series", "uid", "instances", "uid", "rendered"): "wado",
    ("series", "uid", "instances", "uid", "thumbnail"): "wado",
    ("series", "uid", "instances", "uid", "frames", "frames"): "wado",
    ("series", "uid", "instances", "uid", "frames", "frames", "rendered"): "wado",
    ("series", "uid", "instances", "uid", "frames", "frames", "thumbnail"): "wado",
    ("series", "uid", "instances", "uid", "bulkdata", "tag"): "wado",
}
_FRAMES = re.compile(r"[0-9]+(,[0-9]+)*")
_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")


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
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = exc.www_authenticate(f"{current_app.config['FACADE_PUBLIC_URL']}/dicomweb")
    return _error(exc.status, exc.description, headers)


@bp.errorhandler(PacsError)
def _pacs_error(exc: PacsError):
    headers = {"Retry-After": "5"} if exc.status == 503 else {}
    return _error(exc.status, str(exc), headers)


# --- path and query validation ------------------------------------------------------------

def classify(segments: list[str]) -> str:
    """Validate the path below ``studies/{uid}`` and say what it is: ``wado``, ``json`` or ``qido``.

    Raises
    ------
    DicomwebError
        404 for a path that is not a DICOMweb resource, 400 for a malformed UID or frame list.
    """
    shape = []
    i = 0
    while i < len(segments):
        segment = segments[i]
        previous = shape[-1] if shape else None
        if previous in ("series", "instances") and i < len(segments):
            if not is_uid(segment):
                raise DicomwebError(400, f"{segment!r} is not a valid UID")
            shape.append("uid")
        elif previous == "frames":
            if not _FRAMES.fullmatch(segment) or any(int(n) < 1 for n in segment.split(",")):
                raise DicomwebError(400, f"{segment!r} is not a list of frame numbers (1-based)")
            shape.append("frames")
        elif previous == "bulkdata":
            rest = "/".join(segments[i:])
            if not _TAG_PATH.fullmatch(rest):
                raise DicomwebError(404, "unknown bulk data path")
            shape.append("tag")
            break
        else:
            shape.append(segment)
        i += 1
    kind = RESOURCE_PATHS.get(tuple(shape))
    if kind is None:
        raise DicomwebError(404, "not a DICOMweb resource")
    return kind


def _query() -> list[tuple[str, str]]:
    params = []
    for name, value in request.args.items(multi=True):
        if name.lower() in RESERVED_QUERY or QIDO_PARAMS_RE.fullmatch(name):
            params.append((name, value))
        else:
            raise DicomwebError(400, f"invalid query parameter {name!r}")
    return params


# --- authorization ------------------------------------------------------------------------

def authorize_study(study_uid: str) -> None:
    """Check the request's token may read study *study_uid*.

    Raises
    ------
    Unauthorized, Forbidden
        From :mod:`smart.authz`.
    DicomwebError
        404 if the PACS knows no such study.
    """
    grant = authz.require("ImagingStudy", "r")
    if not is_uid(study_uid):
        raise DicomwebError(400, f"{study_uid!r} is not a valid UID")
    try:
        patient = get_studies().patient_of_study(study_uid)
    except StudyNotFound as exc:
        raise DicomwebError(404, "study not found") from exc
    authz.check_patient(grant, "ImagingStudy", patient)


# --- relaying -----------------------------------------------------------------------------

def _upstream_headers() -> dict:
    headers = {"Accept-Encoding": "identity"}
    accept = request.headers.get("Accept")
    if accept:
        headers["Accept"] = accept
    return headers


def _relay(path: str, params: list[tuple[str, str]]) -> Response:
    """Stream the PACS answer to *path* back to the client unchanged."""
    upstream = get_pacs().get(path, params=params, headers=_upstream_headers(), stream=True)

    def body():
        with upstream:
            yield from upstream.raw.stream(CHUNK, decode_content=False)

    response = Response(stream_with_context(body()), status=upstream.status_code)
    response.headers.pop("Content-Type", None)
    for name in RELAYED_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    response.call_on_close(upstream.close)
    return response


def rewrite_urls(datasets: list, pacs_base: str, public_base: str) -> list:
    """Point every RetrieveURL and BulkDataURI in DICOM JSON at the facade.

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
    root = urlsplit(pacs_base).path.rstrip("/") + "/"

    def fix(url: str) -> str:
        parts = urlsplit(url)
        path = parts.path if parts.scheme or url.startswith("/") else None
        if path is not None and path.startswith(root):
            rest = path[len(root):]
            return f"{public_base}/{rest}" + (f"?{parts.query}" if parts.query else "")
        return url

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "BulkDataURI" and isinstance(value, str):
                    node[key] = fix(value)
                elif key == dj.TAGS["RetrieveURL"] and isinstance(value, dict):
                    value["Value"] = [fix(v) if isinstance(v, str) else v for v in value.get("Value", [])]
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
    if upstream.status_code != 200 or not upstream.content.strip():
        response = Response(upstream.content, status=upstream.status_code)
        response.headers.pop("Content-Type", None)
        for name in ("Content-Type", "Warning"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        return response
    try:
        datasets = upstream.json()
    except ValueError as exc:
        raise PacsError("the PACS answered with invalid DICOM JSON") from exc
    if not isinstance(datasets, list):
        raise PacsError("the PACS answered with DICOM JSON that is not an array")
    if patient_filter is not None:
        datasets = [ds for ds in datasets if isinstance(ds, dict)
                    and to_fhir_id(dj.text(ds, "PatientID")) == patient_filter]
    rewrite_urls(datasets, get_pacs().base_url, f"{current_app.config['FACADE_PUBLIC_URL']}/dicomweb")
    response = Response(json.dumps(datasets, ensure_ascii=False, separators=(",", ":")), status=200,
                        mimetype=DICOM_JSON)
    if "Warning" in upstream.headers:
        response.headers["Warning"] = upstream.headers["Warning"]
    return response


# --- routes -------------------------------------------------------------------------------

@bp.get("/studies")
def search_studies():
    """QIDO-RS Search for Studies (PS3.18 Section 10.6), limited to the token's patient."""
    grant = authz.require("ImagingStudy", "s")
    params = _query()
    compartment = grant.compartment("ImagingStudy", "s")
    if compartment is not None:
        patient_id = to_patient_id(compartment)
        params = [(n, v) for n, v in params if n not in ("PatientID", dj.TAGS["PatientID"])]
        params.append(("PatientID", patient_id if patient_id is not None else ""))
        params.append(("includefield", dj.TAGS["PatientID"]))
    return _json_answer("studies", params, patient_filter=compartment)


@bp.get("/studies/<path:rest>")
def study_resource(rest: str):
    """Every resource below a study: WADO-RS, metadata, QIDO-RS series/instances (PS3.18 Section 10.4)."""
    segments = rest.split("/")
    study_uid = segments[0]
    if not is_uid(study_uid):
        authz.require("ImagingStudy", "r")
        raise DicomwebError(400, f"{study_uid!r} is not a valid UID")
    kind = classify(segments[1:])
    params = _query()
    authorize_study(study_uid)
    path = "studies/" + "/".join(segments)
    if kind == "wado":
        return _relay(path, params)
    return _json_answer(path, params)


def http_error(exc) -> Response:
    """Render a werkzeug HTTP error under ``/dicomweb``."""
    return _error(exc.code or 500, exc.description or exc.name)


def internal_error(exc: Exception) -> Response:
    """Render an unexpected failure as a bare 500 without any trace."""
    log.exception("unexpected error in the DICOMweb proxy")
    return _error(500, "internal error")
