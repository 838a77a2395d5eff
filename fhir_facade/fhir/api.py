"""The FHIR R4 API blueprint (``/fhir``): metadata, ImagingStudy, Endpoint and Patient.

Every interaction asks :mod:`smart.authz` first; searches are parsed by
:mod:`fhir_facade.fhir.search` / :mod:`fhir_facade.fhir.patient_search`, answered from the PACS by
:mod:`fhir_facade.pacs.studies`, shaped into Bundles by :mod:`fhir_facade.fhir.bundle` and written
by :mod:`fhir_facade.fhir.render` in the negotiated format.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from smart import api as authz  # the one smart module the facade may import

from fhir_facade.access import (check_owners, local_patient_ids, local_patient_params, public_patient, public_search_params,
                                public_subject)
from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import InvalidPatientId, to_fhir_id, to_patient_id
from fhir_facade.fhir import bundle, capability
from fhir_facade.fhir.audit_search import parse_audit_search
from fhir_facade.fhir.outcomes import BadSearch, FhirError, NotAcceptable, NotFound, operation_outcome
from fhir_facade.fhir.patient_search import parse_endpoint_search, parse_patient_search
from fhir_facade.fhir.render import FHIR_JSON, fhir_response, negotiate, negotiate_request
from fhir_facade.fhir.search import parse_study_search
from fhir_facade.fhir.search_params import ResultParams, is_uid, parse_result_parameter
from fhir_facade.pacs.client import PacsError, PacsTimeout
from fhir_facade.pacs.lookups import UnknownStudy, get_lookups
from fhir_facade.pacs.studies import get_studies
from fhir_facade.resources import mapping

log = logging.getLogger(__name__)

bp = Blueprint("fhir", __name__, url_prefix="/fhir")


# --- errors ----------------------------------------------------------------------------

def _error_response(status: int, diagnostics: str, code: str, headers: dict | None = None) -> Response:
    return fhir_response(operation_outcome(diagnostics, code), status, headers)


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError):
    return _error_response(exc.status, exc.diagnostics, exc.code)


@bp.errorhandler(authz.AuthorizationError)
def _authz_error(exc: authz.AuthorizationError):
    code = {401: "login", 403: "forbidden"}.get(exc.status, "transient")
    realm = f"{current_app.config['FACADE_PUBLIC_URL']}/fhir"
    return _error_response(exc.status, exc.description, code, exc.headers(realm))


#: Seconds a FHIR client is told to wait when the PACS did not answer within FACADE_PACS_TIMEOUT.
PACS_RETRY_AFTER = "5"


@bp.errorhandler(PacsError)
def _pacs_error(exc: PacsError):
    if isinstance(exc, PacsTimeout):
        # SMART Imaging Access: a server MAY answer 503 + Retry-After while a slow backend
        # gathers data, and apps retry on it; the DICOMweb proxy keeps the gateway's 504
        # (README "When the PACS is slow").
        return _error_response(503, f"{exc} within {current_app.config.get('FACADE_PACS_TIMEOUT')} s; "
                               "try again later", "timeout", {"Retry-After": PACS_RETRY_AFTER})
    return _error_response(exc.status, str(exc), "transient", exc.headers)


def _database_error(exc: Exception):
    error = authz.unavailable(exc)
    return _error_response(error.status, error.description, "transient", error.headers())


for _error_class in authz.DATABASE_ERRORS:
    bp.register_error_handler(_error_class, _database_error)


def _lenient_format() -> None:
    if "fhir_format" not in g:
        try:
            g.fhir_format = negotiate(request.args.get("_format"), request.headers.get("Accept"))
        except NotAcceptable:
            g.fhir_format = FHIR_JSON


def http_error(exc: HTTPException) -> Response:
    """Render any werkzeug HTTP error under ``/fhir`` as an OperationOutcome."""
    _lenient_format()
    code = {404: "not-found", 405: "not-supported", 406: "not-supported",
            415: "not-supported"}.get(exc.code or 500, "processing")
    return _error_response(exc.code or 500, exc.description or exc.name, code)


def internal_error(exc: Exception) -> Response:
    """Render an unexpected failure as a 500 OperationOutcome without any trace."""
    log.exception("unexpected error in the FHIR API")
    _lenient_format()
    return _error_response(500, "internal error", "exception")


@bp.before_request
def _before() -> None:
    negotiate_request()


# --- helpers ---------------------------------------------------------------------------

def _ctx() -> mapping.MappingContext:
    return get_studies().ctx


def _query_params() -> list[tuple[str, str]]:
    """Search parameters: the query string, plus the form body for ``POST _search`` (FHIR R4 §3.1.1.1)."""
    params = list(request.args.items(multi=True))
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            raise FhirError("POST _search needs an application/x-www-form-urlencoded body",
                            status=415, code="not-supported")
        params += list(request.form.items(multi=True))
    return params


def _strict() -> bool:
    """``Prefer: handling=strict`` (FHIR R4 §3.1.1.5.14 / §3.1.0.10)."""
    prefer = request.headers.get("Prefer", "")
    return any(p.strip().lower() == "handling=strict" for p in prefer.split(","))


def _read_shape() -> ResultParams:
    """``_summary`` / ``_elements`` on a read (FHIR R4 §3.1.1.5.8-9 apply to reads too)."""
    result = ResultParams()
    for name, raw in request.args.items(multi=True):
        if name in ("_summary", "_elements", "_format", "_pretty"):
            parse_result_parameter(result, name, raw, {}, strict=True)
    if result.summary == "count":
        raise BadSearch("_summary=count applies to searches only")
    return result


def _page(items: list, result: ResultParams) -> list:
    return [] if result.summary_count else items[result.offset:result.offset + result.count]


# --- metadata --------------------------------------------------------------------------

@bp.get("/metadata")
@authz.public
def metadata():
    """CapabilityStatement (FHIR R4 §2.15 / SMART App Launch 2.2 §Capability sets)."""
    return fhir_response(capability.capability_statement(_ctx()))


# --- ImagingStudy ----------------------------------------------------------------------

@bp.get("/ImagingStudy/<study_id>")
@authz.needs("ImagingStudy", "r")
def read_imaging_study(study_id: str):
    """Read one ImagingStudy by StudyInstanceUID (FHIR R4 §3.1.0.1 read)."""
    grant = authz.current_grant()
    shape = _read_shape()
    if not is_uid(study_id):
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    studies = get_studies()
    rows = studies.study_rows(study_id)  # one study query serves the decision and the resource
    try:
        check_owners(grant, get_lookups().patients_of_study_rows(study_id, rows), study_uid=study_id)
    except UnknownStudy as exc:
        raise NotFound(f"ImagingStudy/{study_id} is not known") from exc
    found = [ds for ds in studies.find_studies([("StudyInstanceUID", study_id)], answer=rows)
             if dj.text(ds, "StudyInstanceUID") == study_id]
    if not found:
        raise NotFound(f"ImagingStudy/{study_id} is not known")
    with_instances = shape.summary not in ("true", "text") and (shape.elements is None or "series" in shape.elements)
    resource = public_subject(grant, studies.imaging_studies(found[:1], with_instances)[0])
    return fhir_response(bundle.shape(resource, shape))


def _valid_ids(allowed: frozenset[str]) -> list[str]:
    """The ids of an access list that can name a patient here, sorted (others reach nobody)."""
    valid = []
    for fhir_id in sorted(allowed):
        try:
            to_patient_id(fhir_id)
        except InvalidPatientId:
            continue
        valid.append(fhir_id)
    return valid


def _find_studies(studies, search) -> list[dict]:
    """Study-level answers of one parsed ImagingStudy search, only its patient's if it names one."""
    if search.patient is not None and to_patient_id(search.patient) is None:
        known = studies.patient_id_of(search.patient)
        found = [] if known is None else studies.find_studies(search.qido + [("PatientID", known)],
                                                              with_series=not search.summary_count)
    else:
        found = studies.find_studies(search.qido, with_series=not search.summary_count)
    if search.patient is not None:
        found = [ds for ds in found if to_fhir_id(dj.patient_id(ds)) == search.patient]
    return found


def _one_per_study_uid(found: list[dict]) -> list[dict]:
    """One study-level answer per StudyInstanceUID (the PACS's first), the ImagingStudy id.

    A PACS may file one UID under two patients (Orthanc does); without a patient to
    choose by, the first answer stands for it, as on read.
    """
    seen: set = set()
    kept = []
    for ds in found:
        uid = dj.text(ds, "StudyInstanceUID")
        if uid not in seen:
            seen.add(uid)
            kept.append(ds)
    return kept


def _study_sort_key(ds: dict) -> tuple:
    return (dj.text(ds, "StudyDate") or "", dj.text(ds, "StudyTime") or "", dj.text(ds, "StudyInstanceUID") or "")


@bp.route("/ImagingStudy", methods=["GET"])
@bp.route("/ImagingStudy/_search", methods=["POST"])
@authz.needs("ImagingStudy", "s")
def search_imaging_study():
    """Search ImagingStudy (FHIR R4 §3.1.1; Argonaut SMART Imaging Access search)."""
    grant = authz.current_grant()
    params = local_patient_params(grant, _query_params())
    search = parse_study_search(params, _ctx().timezone, strict=_strict())
    allowed = grant.patients("ImagingStudy", "s")
    if allowed is not None and search.patient is not None and search.patient not in allowed:
        # SMART Imaging Access: a patient that is not the token's patient is refused.
        raise authz.Forbidden("the access token is not for this patient")
    studies = get_studies()
    if allowed is None or search.patient is not None:
        found = _find_studies(studies, search)
    else:
        # One search per patient the grant reaches (none: nothing is found).
        per_patient = [parse_study_search(params + [("patient", p)], _ctx().timezone, strict=_strict())
                       for p in _valid_ids(allowed)]
        if len(per_patient) == 1:
            search = per_patient[0]
        found = [ds for one in per_patient for ds in _find_studies(studies, one)]
    search.echo = public_search_params(grant, search.echo)
    found = _one_per_study_uid(found)
    for keep in search.study_filters:
        found = [ds for ds in found if keep(ds)]
    # Stable order for paging: newest first, then by UID (FHIR R4 §3.1.1.4.2 leaves it to the server).
    found.sort(key=_study_sort_key, reverse=True)
    if search.resource_filters:
        resources = studies.imaging_studies(found, search.wants_instances)
        for keep in search.resource_filters:
            resources = [r for r in resources if keep(r)]
        total = len(resources)
        page = _page(resources, search)
    else:
        total = len(found)
        page = studies.imaging_studies(_page(found, search), search.wants_instances)
    includes: list[dict] = []
    if page and search.include_endpoint:
        # SMART Imaging: on the same page as its studies; each study's web viewer too (IHE MADO).
        includes.append(mapping.endpoint(_ctx()))
        includes += [mapping.viewer_endpoint(r["id"], _ctx()) for r in page if mapping.has_viewer_endpoint(r["id"])]
    if page and search.include_patient:
        wanted = {r["subject"]["reference"] for r in page}
        newest = _newest_per_patient(found)
        includes += [public_patient(grant, p) for p in _patients(
            [ds for pid, ds in newest.items() if f"Patient/{pid}" in wanted])]
    matches = [bundle.shape(public_subject(grant, r), search) for r in page]
    return fhir_response(bundle.searchset(_ctx().fhir_base, "ImagingStudy", matches, total, search, includes))


# --- Endpoint --------------------------------------------------------------------------

@bp.get("/Endpoint/<endpoint_id>")
@authz.needs(("Endpoint", "ImagingStudy"), "r")
def read_endpoint(endpoint_id: str):
    """Read the facade's DICOMweb Endpoint (an Endpoint or ImagingStudy scope: it holds no patient data),
    or a study's web-viewer Endpoint (IHE MADO), answered as a read of that study would be (404, 403)."""
    shape = _read_shape()
    if endpoint_id == mapping.ENDPOINT_ID:
        return fhir_response(bundle.shape(mapping.endpoint(_ctx()), shape))
    study_id = mapping.viewer_endpoint_study(endpoint_id)
    if study_id is None or not is_uid(study_id):
        raise NotFound(f"Endpoint/{endpoint_id} is not known")
    # A study's viewer Endpoint exists when the study does, for whoever may see the study.
    grant = authz.current_grant()
    try:
        check_owners(grant, get_lookups().patients_of_study_rows(study_id, get_studies().study_rows(study_id)),
                     study_uid=study_id)
    except UnknownStudy as exc:
        raise NotFound(f"Endpoint/{endpoint_id} is not known") from exc
    return fhir_response(bundle.shape(mapping.viewer_endpoint(study_id, _ctx()), shape))


@bp.route("/Endpoint", methods=["GET"])
@bp.route("/Endpoint/_search", methods=["POST"])
@authz.needs(("Endpoint", "ImagingStudy"), "s")
def search_endpoint():
    """Search Endpoint by ``_id``, ``connection-type`` and ``status``."""
    search = parse_endpoint_search(_query_params(), strict=_strict())
    matches = [mapping.endpoint(_ctx())]
    for keep in search.filters:
        matches = [r for r in matches if keep(r)]
    page = [bundle.shape(r, search) for r in _page(matches, search)]
    return fhir_response(bundle.searchset(_ctx().fhir_base, "Endpoint", page, len(matches), search))


# --- Patient ---------------------------------------------------------------------------

def _newest_per_patient(found: list[dict]) -> dict[str, dict]:
    """Patient id -> that patient's newest study among *found* (study-level DICOM JSON)."""
    newest: dict[str, dict] = {}
    for ds in sorted(found, key=_study_sort_key, reverse=True):
        newest.setdefault(to_fhir_id(dj.patient_id(ds)), ds)
    return newest


def _patients(studies: list[dict]) -> list[dict]:
    """The Patient of each study, from its patient module as the PACS stores it.

    Read, search and ``_include=ImagingStudy:patient`` build Patients alike: the module
    comes from instance metadata (:meth:`StudyRepository.patient_modules`), not from the
    QIDO-RS answer, which some PACS re-encode lossily.
    """
    return [mapping.patient(module, _ctx()) for module in get_studies().patient_modules(studies)]


def _patient_studies(patient_id: str) -> list[dict]:
    """Study-level answers of one Patient id (newest first), empty when unknown."""
    studies = get_studies()
    dicom_id = studies.patient_id_of(patient_id)
    if dicom_id is None:
        return []
    found = [ds for ds in studies.find_studies([("PatientID", dicom_id)])
             if to_fhir_id(dj.patient_id(ds)) == patient_id]
    return sorted(found, key=_study_sort_key, reverse=True)


@bp.get("/Patient/<patient_id>")
@authz.needs("Patient", "r")
def read_patient(patient_id: str):
    """Read a Patient built from the DICOM patient module of its newest study."""
    grant = authz.current_grant()
    shape = _read_shape()
    patient_id = grant.local_patient(patient_id)  # an EHR token names its patient by the EHR's id
    try:
        to_patient_id(patient_id)
    except InvalidPatientId as exc:
        raise NotFound(f"Patient/{patient_id} is not known") from exc
    authz.check_patient(grant, "Patient", patient_id)
    found = _patient_studies(patient_id)
    if not found:
        raise NotFound(f"Patient/{patient_id} is not known")
    [patient] = _patients(found[:1])
    return fhir_response(bundle.shape(public_patient(grant, patient), shape))


@bp.route("/Patient", methods=["GET"])
@bp.route("/Patient/_search", methods=["POST"])
@authz.needs("Patient", "s")
def search_patient():
    """Search Patient by ``_id``, ``identifier``, ``name``, ``family``, ``given``, ``birthdate``, ``gender``."""
    grant = authz.current_grant()
    search = parse_patient_search(local_patient_ids(grant, _query_params()), _ctx().timezone, strict=_strict())
    allowed = grant.patients("Patient", "s")
    if allowed is not None:
        if search.fhir_ids is not None and not search.fhir_ids & allowed:
            raise authz.Forbidden("the access token is not for this patient")
        search.restrict(set(_valid_ids(allowed)))
    studies = get_studies()
    if search.fhir_ids is not None:
        found = [ds for pid in sorted(search.fhir_ids) for ds in _patient_studies(pid)]
    elif search.patient_ids is not None:
        found = [ds for pid in sorted(search.patient_ids) for ds in studies.find_studies([("PatientID", pid)])]
    else:
        found = studies.find_studies([])
    search.echo = public_search_params(grant, search.echo)
    newest = _newest_per_patient(found)
    resources = [public_patient(grant, r) for r in _patients([newest[pid] for pid in sorted(newest)])]
    for keep in search.filters:
        resources = [r for r in resources if keep(r)]
    page = [bundle.shape(r, search) for r in _page(resources, search)]
    return fhir_response(bundle.searchset(_ctx().fhir_base, "Patient", page, len(resources), search))


@bp.route("/AuditEvent", methods=["GET"])
@bp.route("/AuditEvent/_search", methods=["POST"])
@authz.needs("AuditEvent", "s")
def search_audit_event():
    """Search the audit trail by ``patient``, ``date``, ``agent``, ``entity``, ``type``, ``subtype``,
    ``outcome`` (FHIR R4 AuditEvent), newest first, within the patients the token reaches: a
    patient's token its own events, an auditor's (``user/`` or ``system/AuditEvent.rs``) those of
    its stored access list (all of them with ``--all-patients``)."""
    grant = authz.current_grant()
    query, result = parse_audit_search(local_patient_params(grant, _query_params()), _ctx().timezone,
                                       strict=_strict())
    reach = grant.patients("AuditEvent", "s")
    if reach is not None:
        for patients in query.patients:
            if not reach & set(patients):
                raise authz.Forbidden("the access token is not for this patient")
    events, total = authz.search_audit(query, reach, result.offset, 0 if result.summary_count else result.count)
    page = [bundle.shape(event, result) for event in events]
    return fhir_response(bundle.searchset(_ctx().fhir_base, "AuditEvent", page, total, result))


# Every request is checked against what its view declares (after the checks above).
authz.guard(bp)
