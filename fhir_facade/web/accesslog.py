"""Access log without identifiers: each request as its route template, status and duration.

Concrete paths and query strings name patients and studies (``/fhir/Patient/DEMO-0001``,
``?patient=...``); the log gets ``GET /fhir/Patient/<patient_id> 200 3.1ms`` instead
(DESIGN.md: no token, secret or patient identifier in logs). A streamed answer is logged
when it ends, with its whole duration, and ``incomplete`` when it ended early.
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
    rule = request.url_rule.rule if request.url_rule is not None else "<no route>"
    line = (request.method, rule, response.status_code)

    def write(note: str = "") -> None:
        elapsed = f"{(time.perf_counter() - started) * 1000:.1f}ms" if started is not None else "-"
        log.info("%s %s %s %s%s", *line, elapsed, note)

    if not response.is_streamed or request.method == "HEAD":  # a HEAD answer's body is never sent
        write()
        return response
    # A streamed answer (a study relayed from the PACS) is logged when it ends, with its whole
    # duration, and marked when it ended early: the client went away or the PACS broke off.
    body, finished = response.response, []

    def tracked():
        yield from body
        finished.append(True)

    response.response = tracked()
    response.call_on_close(lambda: write("" if finished else " incomplete"))
    return response


def init_app(app: Flask) -> None:
    """Log every request of *app* by route template (logger ``facade.access``, level INFO)."""
    # First of the before_request hooks: one that answers at once (a CORS preflight) is timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_record)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
