"""Configuration keys of the facade and their defaults, read from the environment."""
from __future__ import annotations

from collections.abc import Mapping

#: (environment variable, default, converter) — DESIGN.md "Configuration".
SETTINGS = (
    ("FACADE_PACS_URL", "http://127.0.0.1:8042/dicom-web", str),
    ("FACADE_PACS_USER", None, str),
    ("FACADE_PACS_PASSWORD", None, str),
    ("FACADE_PUBLIC_URL", "http://127.0.0.1:8080", str),
    ("FACADE_DATABASE_URL", "sqlite:///var/facade.db", str),
    # Connection pool of a server database (PostgreSQL), per worker process: connections kept
    # open, extra ones allowed under load, seconds before a connection is replaced, seconds a
    # request waits for a free connection (then 503).
    ("FACADE_DB_POOL_SIZE", 5, int),
    ("FACADE_DB_MAX_OVERFLOW", 10, int),
    ("FACADE_DB_POOL_RECYCLE", 1800, int),
    ("FACADE_DB_POOL_TIMEOUT", 10.0, float),
    ("FACADE_HOST", "127.0.0.1", str),
    ("FACADE_PORT", 8080, int),
    # Zone used for DICOM times that carry no TimezoneOffsetFromUTC (FH-4).
    ("FACADE_TIMEZONE", "UTC", str),
    # Seconds before a PACS request is abandoned (connect, read).
    ("FACADE_PACS_TIMEOUT", 30.0, float),
    # Study -> patient and QIDO metadata cache: entries and seconds.
    ("FACADE_CACHE_SIZE", 4096, int),
    ("FACADE_CACHE_TTL", 60.0, float),
    # Parallel PACS queries when one search maps many studies.
    ("FACADE_PACS_WORKERS", 8, int),
    # Seconds an identical study-level QIDO-RS answer is reused (0: never).
    ("FACADE_QUERY_CACHE_TTL", 10.0, float),
    # How a study's instances are listed: "metadata" (WADO-RS) or "qido" (instance-level QIDO-RS).
    ("FACADE_INSTANCE_QUERY", "metadata", str),
    # Identifier.system for PatientID when the data names no IssuerOfPatientID.
    ("FACADE_PATIENT_ID_SYSTEM", None, str),
    # Seconds a worker trusts its copy of the revoked-token list (0: read it on every request).
    ("SMART_REVOCATION_CACHE_SECONDS", 1.0, float),
    # Tokens of trusted EHRs (smart.tokens.issuers): seconds an accepted token's verdict is
    # reused (never past its exp), a refused one's, the EHR's discovery and JWK Set, an EHR
    # Patient -> PatientID mapping; seconds to wait for the EHR; Retry-After when it fails.
    ("SMART_EHR_TOKEN_CACHE_SECONDS", 60.0, float),
    ("SMART_EHR_INACTIVE_CACHE_SECONDS", 5.0, float),
    ("SMART_EHR_METADATA_CACHE_SECONDS", 3600.0, float),
    ("SMART_EHR_PATIENT_CACHE_SECONDS", 300.0, float),
    ("SMART_EHR_TIMEOUT", 5.0, float),
    ("SMART_EHR_RETRY_AFTER", 5, int),
    # Reverse proxies in front of the facade whose X-Forwarded-For/-Proto are trusted (0: none).
    ("FACADE_TRUSTED_PROXIES", 0, int),
    # The bundled viewer (/viewer/): OHIF's prebuilt dist (default: viewer/node_modules/@ohif/app/dist),
    # the folder of its files rewritten for the base path, and its registered public OAuth client.
    ("FACADE_VIEWER_DIST", None, str),
    ("FACADE_VIEWER_CACHE", "var/viewer-cache", str),
    ("FACADE_VIEWER_CLIENT_ID", "ohif-viewer", str),
    # Longest life of a share link in seconds (issue 15; the default life is 7 days).
    ("FACADE_SHARE_MAX_SECONDS", 30 * 24 * 3600, int),
    # Allow plain-HTTP OAuth on loopback (demo and tests only).
    ("FACADE_INSECURE_TRANSPORT", "1", str),
    # Client networks (CIDRs, comma or blank separated; "none": no address) that may read
    # /healthz and /readyz, and /metrics (smart.authz.operator).
    ("FACADE_HEALTH_ALLOW", "127.0.0.0/8, ::1", str),
    ("FACADE_METRICS_ALLOW", "127.0.0.0/8, ::1", str),
    # Bearer secret that opens the operator routes from any address (unset: none).
    ("FACADE_METRICS_TOKEN", None, str),
    # Seconds the readiness probe waits for the PACS.
    ("FACADE_READY_TIMEOUT", 2.0, float),
    # Audit trail (smart/audit): "0" turns recording off; seconds a viewer's frame requests of
    # one study are aggregated over; bound of the per-process queue; days kept by `audit prune`;
    # syslog collector (udp://host:port or tcp://host:port, RFC 5424) each event is forwarded to.
    ("FACADE_AUDIT", "1", str),
    ("FACADE_AUDIT_WINDOW", 10.0, float),
    ("FACADE_AUDIT_QUEUE", 10000, int),
    ("FACADE_AUDIT_RETENTION_DAYS", 365, int),
    ("FACADE_AUDIT_SYSLOG", None, str),
)


def from_environ(environ: Mapping[str, str]) -> dict:
    """Read the facade's settings from an environment mapping.

    Parameters
    ----------
    environ : Mapping[str, str]
        Usually ``os.environ``.

    Returns
    -------
    dict
        One entry per name in :data:`SETTINGS`, converted, with the default
        where the variable is unset or empty. ``FACADE_PUBLIC_URL`` and
        ``FACADE_PACS_URL`` lose any trailing slash.

    Raises
    ------
    ValueError
        If a numeric variable holds something that is not a number; the
        message names the variable.
    """
    values: dict = {}
    for name, default, convert in SETTINGS:
        raw = environ.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            values[name] = convert(raw)
        except ValueError as exc:
            raise ValueError(f"{name}={raw!r} is not a valid {convert.__name__}") from exc
    for name in ("FACADE_PUBLIC_URL", "FACADE_PACS_URL"):
        values[name] = values[name].rstrip("/")
    return values
