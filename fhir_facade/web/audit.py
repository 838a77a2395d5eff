"""The audit trail of the FHIR API and the DICOMweb proxy: one after-request hook records every
read, search, retrieval and query, refused ones included (smart's :func:`record_audit`).

Who asked comes from the grant the request's token carried (none for a 401), which patients
it was about from the one access policy (every patient ``check_patient`` was asked about),
which study from the route. Frame requests are recorded as kind ``frames``, which the
recorder aggregates per study, token and window. The query string is kept (an audit trail
may hold patient ids; logs may not) minus any parameter that could carry a secret.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from flask import Flask, Response, request

from smart import api as authz  # the one smart module the facade may import

#: Query parameters never written to the audit trail (RFC 6750 §2.3 lets a token ride in one).
SECRET_PARAMS = frozenset({"access_token", "token", "refresh_token", "code", "code_verifier", "client_secret",
                           "password", "client_assertion", "secret", "share", "key"})

#: FHIR views -> audit kind (the rest of the FHIR blueprint is public: metadata).
_FHIR_KINDS = {
    "fhir.read_imaging_study": ("read", "ImagingStudy", "study_id"),
    "fhir.read_endpoint": ("read", "Endpoint", "endpoint_id"),
    "fhir.read_patient": ("read", "Patient", "patient_id"),
    "fhir.search_imaging_study": ("search", "ImagingStudy", None),
    "fhir.search_endpoint": ("search", "Endpoint", None),
    "fhir.search_patient": ("search", "Patient", None),
    "fhir.search_audit_event": ("audit-search", "AuditEvent", None),
}
#: Last path segments of a QIDO-RS query below a study (PS3.18 Section 10.6).
_QIDO_LEVELS = ("series", "instances")


def _query() -> str:
    pairs = parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True)
    return urlencode([(n, v) for n, v in pairs if n.lower() not in SECRET_PARAMS])


def _classify() -> dict | None:
    """The audit fields the route gives: kind, study, resource; ``None`` for a route not audited."""
    endpoint = request.endpoint
    args = request.view_args or {}
    if endpoint == "dicomweb.study_resource":
        segments = args.get("rest", "").split("/")
        fields = {"study": segments[0] or None}
        if len(segments) > 6 and segments[5] == "frames":
            fields["kind"] = "frames"
        elif segments[-1] in _QIDO_LEVELS:
            fields.update(kind="query", query=_query(), path=request.url_rule.rule)
        else:
            fields["kind"] = "retrieve"
        return fields
    if endpoint == "dicomweb.search_all":
        return {"kind": "query", "query": _query(), "path": request.url_rule.rule}
    found = _FHIR_KINDS.get(endpoint)
    if found is None:
        return None
    kind, resource_type, id_arg = found
    if id_arg is None:
        return {"kind": kind, "resource_type": resource_type, "query": _query(), "path": request.url_rule.rule}
    value = args.get(id_arg)
    if resource_type == "ImagingStudy":
        return {"kind": kind, "study": value}
    return {"kind": kind, "resource_type": resource_type, "resource_id": value}


def _record(response: Response) -> Response:
    if request.method == "OPTIONS" or request.blueprint not in ("fhir", "dicomweb"):
        return response
    fields = _classify()
    if fields is None:
        return response
    fields.update(authz.audit_agent(authz.request_grant()))
    asked = authz.asked_patients()
    if asked:
        fields["patient"] = asked[-1]  # a refused request: the patient refused (checked last)
    elif fields.get("resource_type") == "Patient" and fields.get("resource_id"):
        fields["patient"] = fields["resource_id"]
    fields["address"] = request.remote_addr
    kind = fields.pop("kind")
    authz.record_audit(kind, authz.audit_outcome(response.status_code), **fields)
    return response


def init_app(app: Flask) -> None:
    """Record every FHIR and DICOMweb interaction of *app* in the audit trail (smart's recorder;
    nothing when ``FACADE_AUDIT`` is ``0``)."""
    if str(app.config.get("FACADE_AUDIT", "1")) != "0":
        app.after_request(_record)
