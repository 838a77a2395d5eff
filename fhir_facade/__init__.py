"""FHIR R4 API, DICOM->FHIR mapping, PACS client and DICOMweb proxy of the facade."""
from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import HTTPException, InternalServerError


def init_app(app: Flask) -> None:
    """Register the PACS client, the study repository, the FHIR API and the DICOMweb proxy on *app*."""
    from . import accesslog, cors, dicomweb, fhir, lookups, pacs, studies

    pacs.init_app(app)
    lookups.init_app(app)
    studies.init_app(app)
    app.register_blueprint(fhir.bp)
    app.register_blueprint(dicomweb.bp)
    cors.init_app(app)
    accesslog.init_app(app)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Routing errors (404/405) happen before a blueprint is chosen: answer in the
        # protocol's shape by path.
        if request.path.startswith("/fhir"):
            return fhir.http_error(exc)
        if request.path.startswith("/dicomweb"):
            return dicomweb.http_error(exc)
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        if request.path.startswith("/dicomweb"):
            return dicomweb.internal_error(exc)
        if request.path.startswith("/fhir"):
            return fhir.internal_error(exc)
        app.logger.exception("unexpected error")
        return InternalServerError()
