"""Prometheus metrics of the facade's HTTP side: requests by route template and status,
their latency, and the WADO-RS answers being streamed; and the exposition of every metric.

Labels hold the Flask route template (``/fhir/Patient/<patient_id>``), never the concrete
path, so no patient id, UID or token reaches them (DESIGN.md: no patient identifier in logs).

Under gunicorn with several workers, prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set up by ``gunicorn.conf.py``): every worker writes its
values to files there, and a scrape of any worker reads them all.
"""
from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest, multiprocess)

# The ``*_created`` timestamp series would double the exposition and tell Prometheus nothing
# it does not know (counters reset with the process).
disable_created_metrics()

#: Upper bounds (seconds) of the request latency buckets.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "facade_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "facade_http_request_duration_seconds",
    "Seconds from receiving a request to its answer's headers (a streamed body is not included), "
    "by method and route template",
    ["method", "route"], buckets=REQUEST_BUCKETS)
ACTIVE_STREAMS = Gauge(
    "facade_active_streams",
    "DICOMweb answers being streamed to clients now (WADO-RS relays in flight)",
    multiprocess_mode="livesum")

#: Methods that get a label of their own; any other is counted as ``other`` (the method is
#: the client's to choose: labels must stay a bounded set).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: Route label of a request that matched no route (404, 405).
NO_ROUTE = "<no route>"
#: Routes whose streamed answers count as streams (:data:`ACTIVE_STREAMS`).
STREAM_PREFIX = "/dicomweb/"


#: (method, route, status) -> (request counter, latency histogram) children: ``labels()`` takes a
#: lock and builds a key on every call. Bounded, as the labels are.
_children: dict[tuple[str, str, int], tuple] = {}


def _metrics_for(method: str, rule: str, status: int) -> tuple:
    key = (method, rule, status)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (REQUESTS.labels(method, rule, str(status)), REQUEST_SECONDS.labels(method, rule))
    return found


def _start() -> None:
    g._metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("_metrics_started", None)
    rule = request.url_rule.rule if request.url_rule is not None else NO_ROUTE
    method = request.method if request.method in METHODS else "other"
    count, seconds = _metrics_for(method, rule, response.status_code)
    count.inc()
    if started is not None:
        seconds.observe(time.perf_counter() - started)
    if response.is_streamed and method != "HEAD" and rule.startswith(STREAM_PREFIX):
        ACTIVE_STREAMS.inc()
        # Called by the WSGI server when the body is done or the client went away.
        response.call_on_close(ACTIVE_STREAMS.dec)
    return response


def exposition() -> tuple[bytes, str]:
    """Every metric in the Prometheus text format, with its media type.

    Returns
    -------
    tuple of (bytes, str)
        The body and ``Content-Type`` (Prometheus text format). In multiprocess mode
        (``PROMETHEUS_MULTIPROC_DIR`` set) the values of every worker, living or gone,
        aggregated; otherwise this process's default registry.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def init_app(app: Flask) -> None:
    """Count and time every request of *app* (before any other hook, so early answers count too)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_record)
