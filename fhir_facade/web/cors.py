"""CORS for the FHIR API and the DICOMweb proxy (Fetch standard §3.2; field case DW-11).

``/fhir/metadata`` is readable from any origin; every other FHIR and DICOMweb path only
from the origin of a registered client's redirect URI (:func:`smart.oauth.cors.is_allowed_origin`).
Preflights need no token, and error answers (401, 403, 406, ...) carry the headers too so a
browser app can read them.
"""
from __future__ import annotations

from flask import Flask, Response, request

from smart.api import is_allowed_origin

PUBLIC_PATHS = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration"})
PREFIXES = ("/fhir/", "/dicomweb/")
#: Request headers a SMART or DICOMweb app may send (besides CORS-safelisted ones).
ALLOWED_HEADERS = ("authorization", "accept", "content-type", "prefer", "if-none-match", "if-modified-since",
                   "x-requested-with")
EXPOSED_HEADERS = "WWW-Authenticate, Content-Location, Content-Length, Location, Retry-After, Warning, ETag"
ALLOWED_METHODS = "GET, POST, OPTIONS"


def _allowed_origin(origin: str) -> str | None:
    if request.path in PUBLIC_PATHS:
        return "*"
    if request.path.startswith(PREFIXES) and is_allowed_origin(origin):
        return origin
    return None


def add_cors_headers(response: Response) -> Response:
    """``after_request`` hook: add CORS headers for FHIR and DICOMweb answers, errors included."""
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(PREFIXES):
        return response
    response.vary.add("Origin")  # the answer depends on Origin, allowed or not (Fetch §3.2.5)
    allowed = _allowed_origin(origin)
    if allowed is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
                 if h.strip()]
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ", ".join(
            [h for h in asked if h in ALLOWED_HEADERS] or ["authorization", "accept", "content-type"])
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def preflight() -> Response | None:
    """``before_request`` hook: answer CORS preflights under /fhir and /dicomweb without a token."""
    if (request.method == "OPTIONS" and request.path.startswith(PREFIXES)
            and request.headers.get("Access-Control-Request-Method")):
        return Response(status=204)
    return None


def init_app(app: Flask) -> None:
    """Register the preflight answer and the response hook on *app*."""
    app.before_request(preflight)
    app.after_request(add_cors_headers)
