"""FHIR R4 API, DICOM->FHIR mapping, PACS client and DICOMweb proxy of the facade.

Layers, lowest first (each imports only those below it; contracts in ``.importlinter``):
``dicom`` < ``resources`` < ``pacs`` < ``access`` < {``fhir``, ``dicomweb``} < ``web``.
The FHIR API and the DICOMweb proxy never import each other; of smart, only ``smart.api``.
"""
from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed


def init_app(app: Flask) -> None:
    """Register the PACS client, the study repository, the consent page's patient directory, the FHIR API,
    the DICOMweb proxy, the bundled viewer and the operator routes (health, readiness, metrics) on *app*."""
    from fhir_facade import access, cli
    from fhir_facade.dicomweb import api as dicomweb
    from fhir_facade.fhir import api as fhir
    from fhir_facade.fhir import picker
    from fhir_facade.pacs import client as pacs
    from fhir_facade.pacs import lookups, studies
    from fhir_facade.web import accesslog, audit, cors, ops, viewer

    pacs.init_app(app)
    lookups.init_app(app)
    studies.init_app(app)
    picker.init_app(app)
    access.init_app(app)
    cli.init_app(app)
    app.register_blueprint(fhir.bp)
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(viewer.bp)
    cors.init_app(app)
    accesslog.init_app(app)
    audit.init_app(app)
    ops.init_app(app)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Routing errors (404/405) happen before a blueprint is chosen: answer in the
        # protocol's shape by path.
        if request.path.startswith("/fhir"):
            return with_allow(fhir.http_error(exc), exc)
        if request.path.startswith("/dicomweb"):
            return with_allow(dicomweb.http_error(exc), exc)
        if request.path.startswith("/viewer/"):
            return with_allow(viewer.http_error(exc), exc)
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


def with_allow(response: Response, exc: HTTPException) -> Response:
    """Give a 405 answer the ``Allow`` header of the exception that caused it.

    RFC 9110 Section 15.5.6: a 405 response MUST carry ``Allow`` listing the target
    resource's methods. Werkzeug's own 405 page has it; an answer rendered in a protocol's
    shape (OperationOutcome, DICOMweb error JSON) would lose it without this.

    Parameters
    ----------
    response : flask.Response
        The error answer already rendered for *exc*.
    exc : werkzeug.exceptions.HTTPException
        The routing error; only a ``MethodNotAllowed`` with known methods adds a header.

    Returns
    -------
    flask.Response
        *response*, changed in place.
    """
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response
