"""Operator routes: liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``).

For load balancers, orchestrators and Prometheus, not for apps: no SMART token, but each route
is declared with :func:`smart.api.operator`, so the one access policy admits only clients
the operator allowed (``FACADE_HEALTH_ALLOW``, ``FACADE_METRICS_ALLOW``, ``FACADE_METRICS_TOKEN``).
Bodies are minimal: a status word, and for an unready instance which part failed.
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify

from smart.api import AuthorizationError, database_ready, guard, operator, parse_networks

from fhir_facade.pacs.client import get_pacs
from fhir_facade.web import metrics

bp = Blueprint("ops", __name__)
guard(bp)

#: The operator routes' paths: they never open a session (``SESSIONLESS_PATHS``, see smart.__init__).
OPERATOR_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Seconds a load balancer is asked to wait before probing an unready instance again.
RETRY_AFTER = "5"


def _answer(body: dict, status: int = 200, **headers: str) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers)
    return response


@bp.errorhandler(AuthorizationError)
def _refused(exc: AuthorizationError):
    # No hint of which rule refused (address list, forwarding headers, secret).
    return _answer({"error": "access_denied"}, 403)


@bp.get("/healthz")
@operator("FACADE_HEALTH_ALLOW")
def healthz():
    """Liveness: the process serves requests. Touches neither the database nor the PACS."""
    return _answer({"status": "ok"})


@bp.get("/readyz")
@operator("FACADE_HEALTH_ALLOW")
def readyz():
    """Readiness: the database answers ``SELECT 1`` and the PACS a bounded QIDO-RS query.

    200 ``{"status": "ready"}``; otherwise 503 with ``Retry-After`` and
    ``{"status": "unavailable", "failed": ["database", "pacs"]}`` (those that failed).
    """
    failed = []
    if not database_ready():
        failed.append("database")
    if not get_pacs().ping(float(current_app.config.get("FACADE_READY_TIMEOUT", 2.0))):
        failed.append("pacs")
    if failed:
        return _answer({"status": "unavailable", "failed": failed}, 503, **{"Retry-After": RETRY_AFTER})
    return _answer({"status": "ready"})


@bp.get("/metrics")
@operator("FACADE_METRICS_ALLOW")
def prometheus_metrics():
    """Every metric in the Prometheus text exposition format (:func:`fhir_facade.web.metrics.exposition`)."""
    body, content_type = metrics.exposition()
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Register the operator routes and the request metrics on *app*.

    Raises
    ------
    ValueError
        If ``FACADE_HEALTH_ALLOW`` or ``FACADE_METRICS_ALLOW`` holds something that is not an
        IP address or network; the message names the variable.
    """
    for name in ("FACADE_HEALTH_ALLOW", "FACADE_METRICS_ALLOW"):
        try:
            parse_networks(str(app.config.get(name) or ""))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    app.register_blueprint(bp)
    # Flask opens the session before routing; a session cookie would need the database's key.
    app.config["SESSIONLESS_PATHS"] = frozenset(app.config.get("SESSIONLESS_PATHS", ())) | OPERATOR_PATHS
    metrics.init_app(app)
