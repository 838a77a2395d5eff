"""Prometheus metrics of the PACS layer: PACS requests by operation kind, and the bounded caches.

Labels hold only fixed words (an operation kind, an error kind, a cache name, hit or miss):
never a URL, a UID or a patient. The metrics live in prometheus-client's default registry;
``fhir_facade.web.ops`` exposes them at ``/metrics``.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

#: Upper bounds (seconds) of the PACS latency buckets: from a cached-connection QIDO-RS
#: answer (a few ms) to a timeout (``FACADE_PACS_TIMEOUT``, 30 s by default).
PACS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PACS_SECONDS = Histogram(
    "facade_pacs_request_duration_seconds",
    "Seconds from sending a request to the PACS to its answer's headers (streamed) or body (otherwise), "
    "by DICOMweb operation",
    ["operation"], buckets=PACS_BUCKETS)
PACS_ERRORS = Counter(
    "facade_pacs_errors",
    "PACS requests that failed: unavailable (refused, reset), timeout, invalid (not HTTP, broken body), "
    "server_error (a 5xx answer)",
    ["operation", "error"])
CACHE_LOOKUPS = Counter(
    "facade_cache_lookups",
    "Look-ups in the facade's bounded PACS caches, by cache and result (hit or miss)",
    ["cache", "result"])

#: DICOMweb operation kinds (PS3.18 Section 10.4 WADO-RS, 10.6 QIDO-RS): the ``operation`` label.
OPERATIONS = ("search", "metadata", "retrieve", "frames", "rendered", "thumbnail", "bulkdata")
#: Error kinds: the ``error`` label.
ERRORS = ("unavailable", "timeout", "invalid", "server_error")
#: The caches counted: the ``cache`` label.
CACHES = ("study_owners", "series_owners", "instances", "study_metadata", "queries", "series", "instance_lists",
          "imaging_studies", "patient_modules")

_SEARCH = frozenset({"studies", "series", "instances"})
_LAST = {"metadata": "metadata", "rendered": "rendered", "thumbnail": "thumbnail"}
_BULK = frozenset({"bulk", "bulkdata"})

# Children bound once: ``labels()`` takes a lock and a dictionary look-up on every call.
_pacs_seconds = {name: PACS_SECONDS.labels(name) for name in OPERATIONS}
_pacs_errors = {(name, error): PACS_ERRORS.labels(name, error) for name in OPERATIONS for error in ERRORS}
_cache_lookups = {(name, hit): CACHE_LOOKUPS.labels(name, "hit" if hit else "miss")
                  for name in CACHES for hit in (True, False)}


def operation(path: str) -> str:
    """The DICOMweb operation kind of a PACS request path (one of :data:`OPERATIONS`).

    Parameters
    ----------
    path : str
        The path below the DICOMweb base, or a whole URL path (``/dicom-web/studies/1.2/metadata``);
        a query string is ignored.

    Returns
    -------
    str
        ``search`` for QIDO-RS (a path ending in ``studies``, ``series`` or ``instances``),
        ``metadata``, ``rendered`` or ``thumbnail`` by the last segment, ``frames`` and
        ``bulkdata`` by the one before it, else ``retrieve`` (a study, series or instance).
    """
    parts = path.split("?", 1)[0].rstrip("/").rsplit("/", 2)
    last = parts[-1]
    if last in _SEARCH:
        return "search"
    if last in _LAST:
        return _LAST[last]
    before = parts[-2] if len(parts) > 1 else ""
    if before == "frames":
        return "frames"
    if before in _BULK:
        return "bulkdata"
    return "retrieve"


def observe_pacs(kind: str, seconds: float) -> None:
    """Record one PACS request of operation *kind* that took *seconds*."""
    _pacs_seconds[kind].observe(seconds)


def count_pacs_error(kind: str, error: str) -> None:
    """Count one failed PACS request of operation *kind* (*error* one of :data:`ERRORS`)."""
    _pacs_errors[(kind, error)].inc()


def count_lookup(cache: str, hit: bool) -> None:
    """Count one look-up in cache *cache* (one of :data:`CACHES`)."""
    _cache_lookups[(cache, hit)].inc()
