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
    # Reverse proxies in front of the facade whose X-Forwarded-For/-Proto are trusted (0: none).
    ("FACADE_TRUSTED_PROXIES", 0, int),
    # Allow plain-HTTP OAuth on loopback (demo and tests only).
    ("FACADE_INSECURE_TRANSPORT", "1", str),
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
