"""The FHIR R4 API blueprint (``/fhir``): metadata, ImagingStudy, Endpoint and Patient."""
from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from smart import authz

from . import capability, mapping
from . import dicom_json as dj
from .outcomes import BadSearch, FhirError, NotAcceptable, NotFound, operation_outcome
from .pacs import PacsError
from .patient_ids import InvalidPatientId, to_fhir_id, to_patient_id
from .search import is_uid, parse_study_search
from .studies import StudyNotFound, get_studies

log = logging.getLogger(__name__)

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

FHIR_JSON = "application/fhir+json"
#: Accept / _format values answered with FHIR JSON (FHIR R4 §2.21.0.6 http "Content Types").
JSON_FORMATS = frozenset({"application/fhir+json", "application/json", "json", "application/json+fhir", "*/*",
                          "application/*"})


# --- content negotiation and rendering -------------------------------------------------

def _negotiate() -> None:
    """Refuse formats other than FHIR JSON with 406 (FHIR R4 §2.21.0.6)."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in JSON_FORMATS:
            raise NotAcceptable(f"_format {fmt!r} is not supported; use application/fhir+json")
        return
    accept = request.accept_mimetypes
    if not accept.provided or not request.headers.get("Accept", "").strip():
        return
    if not any(accept[m] for m in ("application/fhir+json", "application/json")):
        raise NotAcceptable(f"Accept {request.headers.get('Accept')!r} is not supported; "
                            "use application/fhir+json")


def fhir_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    """Serialise a FHIR resource as ``application/fhir+json`` (``_pretty`` honoured)."""
    pretty = request.args.get("_pretty") == "true"
    text = json.dumps(body, ensure_ascii=False, indent=2 if pretty else None,
                      separators=None if pretty else (",", ":"))
    response = Response(text, status=status, mimetype=FHIR_JSON)
    response.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _error_response(status: int, diagnostics: str, code: str, headers: dict | None = None) -> Response:
    return fhir_response(operation_outcome(diagnostics, code), status, headers)


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError):
    return _error_response(exc.status, exc.diagnostics, exc.code)


@bp.errorhandler(authz.AuthorizationError)
def _authz_error(exc: authz.AuthorizationError):
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = exc.www_authenticate(f"{current_app.config['FACADE_PUBLIC_URL']}/fhir")
    code = "login" if exc.status == 401 else "forbidden"
    return _error_response(exc.status, exc.description, code, headers)


@bp.errorhandler(PacsError)
def _pacs_error(exc: PacsError):
    headers = {"Retry-After": "5"} if exc.status == 503 else {}
    code = "timeout" if exc.status == 504 else "transient"
    return _error_response(exc.status, str(exc), code, headers)


def http_error(exc: HTTPException) -> Response:
    """Render any werkzeug HTTP error under ``/fhir`` as an OperationOutcome."""
    code = {404: "not-found", 405: "not-supported", 406: "not-supported"}.get(exc.code or 500, "processing")
    return _error_response(exc.code or 500, exc.description or exc.name, code)


def internal_error(exc: Exception) -> Response:
    """Render an unexpected failure as a 500 OperationOutcome without any trace."""
    log.exception("unexpected error in the FHIR API")
    return _error_response(500, "internal error", "exception")


@bp.before_request
def _before() -> None:
    _negotiate()


# --- helpers ---------------------------------------------------------------------------

def _ctx() -> mapping.MappingContext:
    return get_studies().ctx


def _query_params() -> list[tuple[str, str]]:
    params = list(request.args.items(multi=True))
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            raise BadSearch("POST _search needs an application/x-www-form-urlencoded body")
        params += list(request.form.items(multi=True))
    return params


def _strict() -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(p.strip().lower() == "handling=strict" for p in prefer.split(","))


def _bundle(resource_type: str, matches: list[dict], total: int, echo: list[tuple[str, str]],
            includes: list[dict], offset: int, count: int) -> dict:
    base = f"{_ctx().fhir_base}"

    def link(relation: str, at: int) -> dict:
        query = list(echo) + [("_offset", str(at))]
        if not any(name == "_count" for name, _ in echo):
            query.append(("_count", str(count)))
        return {"relation": relation, "url": f"{base}/{resource_type}?{urlencode(query)}"}

    links = [link("self", offset)]
    if count and offset + count < total:
        links.append(link("next", offset + count))
    if offset > 0 and count:
        links.append(link("previous", max(0, offset - count)))
    entries = [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
               for r in matches]
    entries += [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
                for r in includes]
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


# --- metadata --------------------------------------------------------------------------

@bp.get("/metadata")
def metadata():
    """CapabilityStatement (FHIR R4 §2.15 / SMART App Launch 2.2 §Capability sets)."""
    return fhir_response(capability.capability_statement(_ctx()))


# --- ImagingStudy ----------------------------------------------------------------------

@bp.get("/ImagingStudy/<study_id>")
def read_imaging_study(study_id: str):
    """Read one ImagingStudy by StudyInstanceUID (FHIR R4 §3.1.0.1 read)."""
    grant = authz.require("ImagingStudy", "r")
    if not is_uid(study_id):
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    studies = get_studies()
    try:
        patient = studies.patient_of_study(study_id)
    except StudyNotFound as exc:
        raise NotFound(f"ImagingStudy/{study_id} is not known") from exc
    authz.check_patient(grant, "ImagingStudy", patient)
    found = [ds for ds in studies.find_studies([("StudyInstanceUID", study_id)])
             if dj.text(ds, "StudyInstanceUID") == study_id]
    if not found:
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    return fhir_response(studies.imaging_studies(found[:1])[0])


@bp.route("/ImagingStudy", methods=["GET"])
@bp.route("/ImagingStudy/_search", methods=["POST"])
def search_imaging_study():
    """Search ImagingStudy (FHIR R4 §3.1.1; Argonaut SMART Imaging Access search)."""
    grant = authz.require("ImagingStudy", "s")
    search = parse_study_search(_query_params(), _ctx().timezone, strict=_strict())
    compartment = grant.compartment("ImagingStudy", "s")
    if compartment is not None:
        if search.patient is not None and search.patient != compartment:
            # SMART Imaging Access: a patient that is not the token's patient is refused.
            raise authz.Forbidden("the access token is not for this patient")
        if search.patient is None:
            search = parse_study_search(_query_params() + [("patient", compartment)], _ctx().timezone,
                                        strict=_strict())
    studies = get_studies()
    if search.patient is not None and to_patient_id(search.patient) is None:
        known = studies.resolve_hashed(search.patient)
        if known is None:
            found = []
        else:
            search.qido.append(("PatientID", known))
            found = studies.find_studies(search.qido)
    else:
        found = studies.find_studies(search.qido)
    if search.patient is not None:
        found = [ds for ds in found if to_fhir_id(dj.text(ds, "PatientID")) == search.patient]
    for keep in search.study_filters:
        found = [ds for ds in found if keep(ds)]
    # Stable order for paging: newest first, then by UID.
    found.sort(key=lambda ds: (dj.text(ds, "StudyDate") or "", dj.text(ds, "StudyTime") or "",
                               dj.text(ds, "StudyInstanceUID") or ""), reverse=True)
    if search.resource_filters:
        resources = studies.imaging_studies(found)
        for keep in search.resource_filters:
            resources = [r for r in resources if keep(r)]
        total = len(resources)
        page = [] if search.summary_count else resources[search.offset:search.offset + search.count]
    else:
        total = len(found)
        window = [] if search.summary_count else found[search.offset:search.offset + search.count]
        page = studies.imaging_studies(window)
    includes: list[dict] = []
    if page and search.include_endpoint:
        includes.append(mapping.endpoint(_ctx()))
    if page and search.include_patient:
        seen = set()
        for ds in found:
            pid = to_fhir_id(dj.text(ds, "PatientID"))
            if pid not in seen and any(r["subject"]["reference"] == f"Patient/{pid}" for r in page):
                seen.add(pid)
                includes.append(mapping.patient(ds, _ctx()))
    return fhir_response(_bundle("ImagingStudy", page, total, search.echo, includes, search.offset, search.count))


# --- Endpoint --------------------------------------------------------------------------

@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str):
    """Read the facade's DICOMweb Endpoint."""
    authz.current_grant()
    if endpoint_id != mapping.ENDPOINT_ID:
        raise NotFound(f"Endpoint/{endpoint_id} is not known")
    return fhir_response(mapping.endpoint(_ctx()))


@bp.route("/Endpoint", methods=["GET"])
@bp.route("/Endpoint/_search", methods=["POST"])
def search_endpoint():
    """Search Endpoint by ``_id``, ``connection-type`` and ``status``."""
    authz.current_grant()
    resource = mapping.endpoint(_ctx())
    matches = [resource]
    echo = []
    for name, raw in _query_params():
        if name == "_id":
            ok = mapping.ENDPOINT_ID in raw.split(",")
        elif name == "connection-type":
            ok = any(v.split("|")[-1] == "dicom-wado-rs" and (
                "|" not in v or v.split("|")[0] in ("", mapping.ENDPOINT_CONNECTION_TYPE)) for v in raw.split(","))
        elif name == "status":
            ok = "active" in raw.split(",")
        elif name in ("_format", "_pretty", "_count", "_offset"):
            continue
        else:
            if _strict():
                raise BadSearch(f"unknown search parameter {name!r}")
            continue
        echo.append((name, raw))
        if not ok:
            matches = []
    return fhir_response(_bundle("Endpoint", matches, len(matches), echo, [], 0, 50))


# --- Patient ---------------------------------------------------------------------------

@bp.get("/Patient/<patient_id>")
def read_patient(patient_id: str):
    """Read a Patient built from the DICOM patient module of its studies."""
    grant = authz.require("Patient", "r")
    try:
        dicom_id = to_patient_id(patient_id)
    except InvalidPatientId as exc:
        raise NotFound(f"Patient/{patient_id} is not known") from exc
    authz.check_patient(grant, "Patient", patient_id)
    studies = get_studies()
    if dicom_id is None:
        dicom_id = studies.resolve_hashed(patient_id)
        if dicom_id is None:
            raise NotFound(f"Patient/{patient_id} is not known")
    found = [ds for ds in studies.find_studies([("PatientID", dicom_id)])
             if to_fhir_id(dj.text(ds, "PatientID")) == patient_id]
    if not found:
        raise NotFound(f"Patient/{patient_id} is not known")
    return fhir_response(mapping.patient(found[0], _ctx()))
