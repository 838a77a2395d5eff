"""Content negotiation and serialisation of FHIR resources: JSON or XML, ``_pretty`` (FHIR R4 §3.1.0.10).

The format comes from ``_format`` when given, else from ``Accept`` (FHIR R4 §2.21.0.6
"Content Types and Encodings"); anything the server cannot produce is a 406. XML is written
by the ``fhir.resources`` R4B models (element order of the R4 StructureDefinitions, FHIR R4
§2.6 "XML Representation").
"""
from __future__ import annotations

import json

from fhir.resources.R4B import get_fhir_model_class
from flask import Response, g, request

from fhir_facade.fhir.outcomes import NotAcceptable

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"

#: Media types and ``_format`` values -> the format served (FHIR R4 §2.21.0.6 and §3.1.0.10:
#: ``json``, ``xml`` and the MIME types, including the pre-R4 ``+fhir`` spellings).
FORMATS = {
    "application/fhir+json": FHIR_JSON, "application/json": FHIR_JSON, "application/json+fhir": FHIR_JSON,
    "json": FHIR_JSON, "text/json": FHIR_JSON,
    "application/fhir+xml": FHIR_XML, "application/xml": FHIR_XML, "application/xml+fhir": FHIR_XML,
    "text/xml": FHIR_XML, "xml": FHIR_XML,
}
#: Wildcards in Accept -> what they get (JSON first).
WILDCARDS = {"*/*": FHIR_JSON, "application/*": FHIR_JSON, "text/*": FHIR_XML}
#: ``fhirVersion`` media-type parameter values this server speaks (FHIR R4 §2.21.0.6.1).
FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})


def _media_ranges(header: str) -> list[tuple[str, float, dict]]:
    """Parse an Accept header into (media range, q, parameters), RFC 9110 §12.5.1."""
    ranges = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append((media, q, params))
    return ranges


def negotiate(format_param: str | None, accept: str | None) -> str:
    """Choose ``application/fhir+json`` or ``application/fhir+xml`` for a request.

    Parameters
    ----------
    format_param : str or None
        The ``_format`` query parameter (overrides Accept, FHIR R4 §3.1.0.10).
    accept : str or None
        The Accept header.

    Raises
    ------
    NotAcceptable
        Nothing requested is served, or a ``fhirVersion`` other than 4.0 is asked for.
    """
    if format_param is not None:
        # Only separators (``,``, ``;``) name no media type at all: a 406 like any other.
        ranges = _media_ranges(format_param)
        media, _, params = ranges[0] if ranges else ("", 0, {})
        served = FORMATS.get(media)
        if served is None or params.get("fhirversion", "4.0") not in FHIR_VERSIONS:
            raise NotAcceptable(f"_format {format_param!r} is not served; use json or xml")
        return served
    if not accept or not accept.strip():
        return FHIR_JSON
    best, best_q = None, 0.0
    for media, q, params in _media_ranges(accept):
        served = FORMATS.get(media) or WILDCARDS.get(media)
        if served is None or q <= 0 or params.get("fhirversion", "4.0") not in FHIR_VERSIONS:
            continue
        if q > best_q:
            best, best_q = served, q
    if best is None:
        raise NotAcceptable(f"Accept {accept!r} is not served; use {FHIR_JSON} or {FHIR_XML}")
    return best


def negotiate_request() -> None:
    """Negotiate the current request's format and remember it on ``g`` (406 on failure)."""
    g.fhir_format = FHIR_JSON  # errors about the format itself are answered in JSON
    g.fhir_format = negotiate(request.values.get("_format"), request.headers.get("Accept"))


def serialize(body: dict, media_type: str, pretty: bool) -> bytes:
    """Serialise one FHIR resource (Bundles included) as JSON or XML bytes."""
    if media_type == FHIR_XML:
        model = get_fhir_model_class(body["resourceType"]).model_validate(body)
        return model.model_dump_xml(pretty_print=pretty)
    text = json.dumps(body, ensure_ascii=False, indent=2 if pretty else None,
                      separators=None if pretty else (",", ":"))
    return text.encode("utf-8")


def fhir_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    """Answer *body* in the negotiated format, honouring ``_pretty=true``."""
    media_type = g.get("fhir_format", FHIR_JSON)
    pretty = request.values.get("_pretty") == "true"
    try:
        data = serialize(body, media_type, pretty)
    except Exception:
        if media_type == FHIR_JSON or status < 400:
            raise
        media_type = FHIR_JSON  # never fail an error answer because XML could not be written
        data = serialize(body, media_type, pretty)
    response = Response(data, status=status)
    response.headers["Content-Type"] = f"{media_type}; charset=utf-8"
    response.headers["Vary"] = "Accept"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
