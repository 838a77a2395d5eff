"""Access log without identifiers: each request as its route template, status and duration.

Concrete paths and query strings name patients and studies (``/fhir/Patient/DEMO-0001``,
``?patient=...``); the log gets ``GET /fhir/Patient/<patient_id> 200 3.1ms`` instead
(DESIGN.md: no token, secret or patient identifier in logs).
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

log = logging.getLogger("facade.access")


def _start() -> None:
    g._access_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("_access_started", None)
    elapsed = f"{(time.perf_counter() - started) * 1000:.1f}ms" if started is not None else "-"
    rule = request.url_rule.rule if request.url_rule is not None else "<no route>"
    log.info("%s %s %s %s", request.method, rule, response.status_code, elapsed)
    return response


def init_app(app: Flask) -> None:
    """Log every request of *app* by route template (logger ``facade.access``, level INFO)."""
    app.before_request(_start)
    app.after_request(_record)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
