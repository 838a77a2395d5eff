"""The DICOMweb proxy blueprint (``/dicomweb``): WADO-RS and QIDO-RS paths, validated and authorized.

Every request's path and query are validated and its token authorized (:mod:`smart.authz`)
before the PACS is asked anything; the representation is negotiated here (406 before the
PACS), and :mod:`fhir_facade.dicomweb.relay` streams the answer.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request

from smart import api as authz  # the one smart module the facade may import

from fhir_facade.access import check_study_access
from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.uids import is_uid
from fhir_facade.dicomweb import decoded_frames
from fhir_facade.dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, Choice, choices
from fhir_facade.dicomweb.relay import (  # noqa: F401 (rewrite_urls: API)
    DicomwebError, NotAvailable, error_response, json_answer, page, relay, rewrite_urls,
)
from fhir_facade.pacs.client import PacsError
from fhir_facade.pacs.exact import narrowing
from fhir_facade.pacs.lookups import UnknownStudy, get_lookups
from fhir_facade.pacs.studies import get_studies

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

#: Query parameters relayed to the PACS (PS3.18 Section 8.3.4, 8.3.5, 10.4.1).
QIDO_PARAMS_RE = re.compile(r"^([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*)(\.([0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*))*$")
RESERVED_QUERY = frozenset({"includefield", "limit", "offset", "fuzzymatching", "charset",
                            "annotation", "quality", "viewport", "window", "iccprofile"})


@bp.errorhandler(DicomwebError)
def _dicomweb_error(exc: DicomwebError):
    return error_response(exc.status, exc.message)


@bp.errorhandler(authz.AuthorizationError)
def _authz_error(exc: authz.AuthorizationError):
    realm = f"{current_app.config['FACADE_PUBLIC_URL']}/dicomweb"
    return error_response(exc.status, exc.description, exc.headers(realm))


@bp.errorhandler(PacsError)
def _pacs_error(exc: PacsError):
    return error_response(exc.status, str(exc), exc.headers)


def _database_error(exc: Exception):
    error = authz.unavailable(exc)
    return error_response(error.status, error.description, error.headers())


for _error_class in authz.DATABASE_ERRORS:
    bp.register_error_handler(_error_class, _database_error)


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
_FRAMES = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*")
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
            if segment.count(",") >= MAX_FRAME_LIST:
                raise DicomwebError(400, f"at most {MAX_FRAME_LIST} frame numbers in one request")
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


#: Largest rendered width or height (pixels) asked of the PACS: a viewport of 20,000 x 20,000
#: made Orthanc render 400 megapixels, and 0 made it drop the connection.
MAX_VIEWPORT = 4096
_VIEWPORT = re.compile(r"([0-9]{1,9}),([0-9]{1,9})((,(-?[0-9]{1,9}(\.[0-9]{1,9})?)?){4})?")


def _viewport_ok(value: str) -> bool:
    """A PS3.18 Section 8.3.5.1.3 viewport ``vw,vh[,[sx],[sy],[sw],[sh]]`` of a size the facade relays."""
    match = _VIEWPORT.fullmatch(value)
    return bool(match) and all(1 <= int(n) <= MAX_VIEWPORT for n in match.group(1, 2))


#: Digits 0-9 only (``str.isdigit`` also takes superscripts and other scripts' digits).
_ASCII_DIGITS = re.compile(r"[0-9]+")
#: PS3.18 Section 8.3.5.1.4 ``window=center,width,function``: decimal center and width, and a
#: VOI LUT Function as PS3.18 spells it.
_WINDOW = re.compile(r"(-?[0-9]{1,9}(\.[0-9]{1,9})?),([0-9]{1,9}(\.[0-9]{1,9})?),(linear|linear-exact|sigmoid)")


def _rendering_ok(name: str, value: str) -> str | None:
    """What is wrong with a rendering parameter (PS3.18 Section 8.3.5.1), or ``None``."""
    if name == "viewport" and not _viewport_ok(value):
        return (f"viewport must be width,height (1 to {MAX_VIEWPORT} pixels) "
                "and optionally a source rectangle sx,sy,sw,sh")
    if name == "quality" and not (_ASCII_DIGITS.fullmatch(value) and len(value) <= 3 and 1 <= int(value) <= 100):
        return "quality must be an integer from 1 to 100"
    if name == "window":
        match = _WINDOW.fullmatch(value)
        # Window width: at least 1 for LINEAR, above 0 otherwise (PS3.3 Section C.11.2.1.2).
        if not match or float(match.group(3)) < (1 if match.group(5) == "linear" else 1e-9):
            return ("window must be center,width,function: linear (width 1 or more), "
                    "linear-exact or sigmoid (width above 0)")
    return None


def _query() -> list[tuple[str, str]]:
    params = []
    for name, value in request.args.items(multi=True):
        if name == "accept":  # PS3.18 Section 8.3.3.1: decided here, like the Accept header
            continue
        if name.lower() in ("limit", "offset") and not _ASCII_DIGITS.fullmatch(value):
            raise DicomwebError(400, f"{name} must be a non-negative integer")
        problem = _rendering_ok(name.lower(), value)
        if problem:
            raise DicomwebError(400, problem)
        if name.lower() in RESERVED_QUERY:
            params.append((name.lower(), value))  # as PS3.18 spells them, which is what a PACS matches
        elif QIDO_PARAMS_RE.fullmatch(name):
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

def authorize_study(study_uid: str, segments: list[str] = ()) -> None:
    """Check the request's token may read study *study_uid* (every patient filed under it).

    Below a series (*segments*: the path's parts after ``studies/``), the series' own
    owners must be allowed too, looked up per series; a resource of the whole study has
    its owners asked afresh. So a patient's series stored under the study's UID after its
    owners were cached is never served with the first patient's token.

    Raises
    ------
    Unauthorized, Forbidden
        From :mod:`smart.authz`.
    DicomwebError
        404 if the PACS knows no such study.
    """
    grant = authz.current_grant()
    series_uid = segments[2] if len(segments) > 2 and segments[1] == "series" else None
    try:
        check_study_access(grant, study_uid, series_uid=series_uid, fresh=series_uid is None)
    except UnknownStudy as exc:
        raise DicomwebError(404, "study not found" if series_uid is None else "series not found") from exc


def _negotiate(kind: str, frames: int = 0) -> Choice:
    return _negotiate_all(kind, frames)[0]


#: Representations tried, best first, when the PACS cannot produce one (a transcoding it lacks).
MAX_REPRESENTATIONS = 3


def _negotiate_all(kind: str, frames: int = 0) -> list[Choice]:
    accept = request.args.get("accept") or request.headers.get("Accept")
    found = choices(kind, accept, frames=frames)
    if not found:
        raise DicomwebError(406, f"none of the accepted media types can be served: {accept or ''}")
    return found[:MAX_REPRESENTATIONS]


# --- routes -------------------------------------------------------------------------------

@bp.get("/studies")
@bp.get("/series")
@bp.get("/instances")
@authz.needs("ImagingStudy", "s")
def search_all():
    """QIDO-RS searches at the top level (PS3.18 Section 10.6), limited to the patients the token
    reaches (:meth:`smart.authz.AccessGrant.patients`)."""
    grant = authz.current_grant()
    params = _query()
    _negotiate("json")
    allowed = grant.patients("ImagingStudy", "s")
    level = qido_level(request.path)  # the route: studies, series or instances
    if allowed is None:
        return json_answer(level, normalize_includefield(params, level))
    targets = _reachable_patient_ids(allowed)
    asked = {v for n, v in params if n in ("PatientID", dj.TAGS["PatientID"])}
    if asked:
        # Another patient's PatientID (or several, or one no reachable patient has): an empty
        # result, never the token's own studies in its place.
        targets = {f: p for f, p in targets.items() if {p} == asked}
    params = [(n, v) for n, v in params if n not in ("PatientID", dj.TAGS["PatientID"])]
    if not targets:
        return Response("[]", status=200, mimetype="application/dicom+json")
    if len(targets) == 1:
        [(fhir_id, patient_id)] = targets.items()
        return _patient_answer(level, params, fhir_id, patient_id)
    # Several patients: one query each, merged, then paged here.
    paging = [(n, v) for n, v in params if n in ("limit", "offset")]
    params = [(n, v) for n, v in params if n not in ("limit", "offset")]
    answers = [_patient_answer(level, params, f, p) for f, p in targets.items()]
    return _merged(answers, dict(paging))


def _reachable_patient_ids(allowed: frozenset[str]) -> dict[str, str]:
    """FHIR Patient id -> exact PatientID of each patient of an access list the PACS can hold."""
    found = {fhir_id: _compartment_patient_id(fhir_id) for fhir_id in sorted(allowed)}
    return {fhir_id: patient_id for fhir_id, patient_id in found.items() if patient_id is not ...}


def _patient_answer(level: str, params: list[tuple[str, str]], fhir_id: str, patient_id: str) -> Response:
    """A top-level QIDO-RS answer with one patient's rows only (*params* carry no PatientID)."""
    narrowed = narrowing(patient_id)
    paging = []
    if not narrowed:  # the PACS is asked for every study: page after the patient's rows are picked
        paging = [(n, v) for n, v in params if n in ("limit", "offset")]
        params = [(n, v) for n, v in params if n not in ("limit", "offset")]
    params = params + narrowed + [("includefield", dj.TAGS["PatientID"]),
                                  ("includefield", dj.TAGS["StudyInstanceUID"])]
    return json_answer(level, normalize_includefield(params, level), patient_filter=fhir_id,
                       patient_id=patient_id, paging=paging)


def _merged(answers: list[Response], paging: dict[str, str]) -> Response:
    """One DICOM JSON answer from several patients' answers, with QIDO-RS ``offset`` and ``limit``
    (PS3.18 Section 8.3.4.4) applied to the whole; the first failure is answered as it is."""
    rows: list = []
    warnings = []
    for answer in answers:
        if answer.status_code == 204:
            continue
        if answer.status_code != 200:
            return answer
        rows += json.loads(answer.get_data())
        warnings += answer.headers.getlist("Warning")
    rows = page(rows, paging)
    response = Response(json.dumps(rows, ensure_ascii=False, separators=(",", ":")), status=200,
                        mimetype="application/dicom+json")
    for warning in dict.fromkeys(warnings):
        response.headers.add("Warning", warning)
    return response


def _compartment_patient_id(compartment: str):
    """The exact PatientID of a token's Patient id, or ``...`` when no PatientID has that id."""
    patient_id = get_studies().patient_id_of(compartment)
    return ... if patient_id is None else patient_id


@bp.get("/studies/<path:rest>")
@authz.needs("ImagingStudy", "r")
def study_resource(rest: str):
    """Every resource below a study: WADO-RS, metadata, frames, rendered, QIDO-RS (PS3.18 Section 10.4)."""
    segments = rest.split("/")
    study_uid = segments[0]
    if not is_uid(study_uid):
        raise DicomwebError(400, f"{study_uid!r} is not a valid UID")
    kind, resource = classify(segments[1:])
    params = _query()
    authorize_study(study_uid, segments)
    # segments: StudyUID, "series", SeriesUID, "instances", SOPInstanceUID, "frames", list, ...
    frame_numbers = [int(n) for n in segments[6].split(",")] if len(segments) > 6 and segments[5] == "frames" else []
    options = _negotiate_all(kind, frames=len(frame_numbers))
    path = "studies/" + "/".join(segments)
    if kind == "json":
        if resource == "qido":
            params = normalize_includefield(params, qido_level(path))
        return json_answer(path, params)
    if resource == "bulkdata" and segments[6].lower() == PIXEL_DATA:
        return _pixel_data(study_uid, segments, path, params, options)
    explain = None
    if len(segments) >= 5 and (frame_numbers or kind == "rendered"):
        explain = lambda: _explain_pixel_failure(study_uid, segments[2], segments[4], frame_numbers)  # noqa: E731
    if len(set(frame_numbers)) > 1:
        # Orthanc sends the frames it has and then breaks the answer off at one past the
        # last, after its 200 (and ours) went out: a list is checked before it is asked for.
        explain()
    # A representation the PACS refused for one frame (or a whole study, series, instance) is
    # remembered for the instance (or that resource): only for requests with nothing of the
    # client's in them that could make the PACS fail instead (a frame list, a parameter).
    key = None
    if not params and (len(frame_numbers) == 1 or len(segments) <= 5):
        key = "/".join(segments[:6])
    try:
        response = _first_available(key, path, params, options, explain)
    except NotAvailable:
        # Uncompressed frames the PACS cannot decode: the facade decodes them itself.
        fallback = next((c for c in options if decoded_frames.can_answer(c)), None) if kind == "frames" else None
        response = fallback and decoded_frames.answer("studies/" + "/".join(segments[:5]), frame_numbers, fallback)
        if response is None:
            raise
        return response
    if segments[-1] == "thumbnail" and response.status_code == 404:
        # A PACS without thumbnails (Orthanc 1.10): the rendered resource in a small viewport,
        # the client's if it names one (PS3.18 Section 8.3.5.1.3).
        response.close()
        if not any(name == "viewport" for name, _ in params):  # _query() wrote it in lower case
            params = params + [("viewport", THUMBNAIL_VIEWPORT)]
        return _first_available(None, path[:-len("thumbnail")] + "rendered", params, options, explain)
    return response


#: The viewport (width,height in pixels) of a thumbnail made from the rendered resource.
THUMBNAIL_VIEWPORT = "128,128"


def _first_available(key: str | None, path: str, params: list[tuple[str, str]], options: list[Choice],
                     explain: Callable[[], None] | None = None, **how) -> Response:
    """Relay the first of *options* the PACS can produce for *path* (PS3.18 Section 8.7.1).

    A representation the PACS refused for the resource *key* (``None``: remember nothing)
    within the cache time is not asked for again (a Big Endian instance's frames as stored
    would cost a failed request each time); the last option is always tried, for its 406.

    Raises
    ------
    NotAvailable
        If the PACS can produce none of them (406).
    """
    lookups = get_lookups()
    untried = [choice for choice in options if key is None or not lookups.refused(key, choice)] or options[-1:]
    refusal = None
    for choice in untried:
        try:
            return relay(path, params, choice, explain, **how)
        except NotAvailable as exc:
            refusal = exc
            if key is not None:
                lookups.note_refused(key, choice)
    raise refusal  # the last option's 406


#: The Pixel Data (7FE0,0010) bulk data path segment, lower case.
PIXEL_DATA = "7fe00010"

#: Most frame numbers put in one PACS request (Orthanc 1.10 refuses a URL of 20,000).
MAX_FRAME_LIST = 1000


def _pixel_data(study_uid: str, segments: list[str], path: str, params: list[tuple[str, str]],
                options: list[Choice]) -> Response:
    """Pixel Data bulk data, uncompressed and little endian as ``application/octet-stream`` is.

    Octet-stream bulk data is uncompressed, Explicit VR Little Endian (PS3.18 Section
    8.7.3.5.2), while a PACS sends Pixel Data as stored: Orthanc sends the fragments of
    compressed Pixel Data (an empty Basic Offset Table first) as octet-stream parts. So the
    instance's frames are asked for in Explicit VR Little Endian and sent as one part. When
    that cannot be (over :data:`MAX_FRAME_LIST` frames, single-bit frames that need not end
    on a byte boundary, frames the PACS cannot cut or decode), the PACS's own value is
    relayed if it is one part; a Basic Offset Table and fragments (PS3.5 Section A.4) are
    several: 406 (see :func:`~fhir_facade.dicomweb.relay.relay` ``single``).

    Raises
    ------
    DicomwebError
        404 when the instance is missing or has no pixel data; 406 when the Pixel Data
        cannot be had uncompressed.
    """
    series_uid, sop_uid = segments[2], segments[4]
    lookups = get_lookups()
    info = lookups.instance(study_uid, series_uid, sop_uid)
    if info is None:
        raise DicomwebError(404, "instance not found")
    if not info.has_pixels:
        raise DicomwebError(404, "the instance has no pixel data")
    key = "/".join(segments[:5])  # the instance
    # Not "*" (frames as stored may be compressed): choices() put Explicit VR Little Endian after it.
    # Bulk data takes no query parameters (PS3.18 Section 10.4.1.1.5): none reach the PACS,
    # so nothing of the client's can make it fail and be remembered as a refusal.
    as_frames = [choice for choice in options if choice.transfer_syntax != "*"
                 and not lookups.refused(f"{key}/pixeldata", choice)]
    if as_frames and info.number_of_frames <= MAX_FRAME_LIST and info.bits_allocated != 1:
        frames = ",".join(str(n) for n in range(1, info.number_of_frames + 1))
        try:
            return _first_available(f"{key}/pixeldata", f"studies/{study_uid}/series/{series_uid}/instances/"
                                    f"{sop_uid}/frames/{frames}", [], as_frames, merge=True)
        except NotAvailable:
            pass  # the PACS's own value, if it is uncompressed
    native = [choice for choice in options if choice.transfer_syntax in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN)]
    if not native:
        raise DicomwebError(406, "Pixel Data bulk data is available in Explicit VR Little Endian only")
    return _first_available(f"{key}/bulk", path, [], native, single=True)


def _explain_pixel_failure(study_uid: str, series_uid: str, sop_uid: str, frame_numbers: list[int]) -> None:
    """After the PACS refused a frames or rendered request, answer 404 where PS3.18 wants it.

    Orthanc answers 400 for a frame past NumberOfFrames and for an instance without
    pixels; PS3.18 Section 10.4.1.3.3 (frames) wants 404. Looked up only on failure, so a
    single frame costs no extra query; a list of frames is checked before it is asked for
    (the look-up is cached), because Orthanc fails a list only after sending its first parts.

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
    return error_response(exc.code or 500, exc.description or exc.name)


def internal_error(exc: Exception) -> Response:
    """Render an unexpected failure as a bare 500 without any trace."""
    log.exception("unexpected error in the DICOMweb proxy")
    return error_response(500, "internal error")


# Every request is checked against what its view declares.
authz.guard(bp)
