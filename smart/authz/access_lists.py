"""The stored access lists of clients and users (``smart grant-access``), read from the
database and cached per app for ``SMART_REVOCATION_CACHE_SECONDS``.

A list is "all patients" (``None``) or named Patient ids; an absent list is no patient.
:meth:`smart.authz.AccessGrant.patients` asks it for ``user/`` and ``system/`` scopes, the
consent page for a practitioner's launch.
"""
from __future__ import annotations

import threading
import time

from flask import current_app
from sqlalchemy import select

from smart.store.db import get_session
from smart.store.models import ACCESS_USER, ALL_PATIENTS, PatientAccess
from smart.tokens import jwt as tokens


class _AccessCache:
    """Stored access lists read within the last few seconds, per app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}


def _access_cache() -> _AccessCache:
    return current_app.extensions.setdefault("smart_access", _AccessCache())


def read_access_list(kind: str, subject: str) -> frozenset[str] | None:
    """The stored access list of a client or user, straight from the database.

    Parameters
    ----------
    kind : {"client", "user"}
        :data:`smart.store.models.ACCESS_CLIENT` or :data:`smart.store.models.ACCESS_USER`.
    subject : str
        The client id or the username.

    Returns
    -------
    frozenset of str or None
        ``None`` for all patients, else the named Patient ids (empty: none).
    """
    if not subject:
        return frozenset()
    rows = get_session().scalars(select(PatientAccess.patient).where(
        PatientAccess.kind == kind, PatientAccess.subject == subject)).all()
    return None if ALL_PATIENTS in rows else frozenset(rows)


def stored_patients(kind: str, subject: str) -> frozenset[str] | None:
    """:func:`read_access_list`, trusted for ``SMART_REVOCATION_CACHE_SECONDS`` (as revocations are).

    A grant or revocation made in this process is seen at once (:func:`forget_access`);
    one made elsewhere within that many seconds.
    """
    ttl = float(current_app.config.get("SMART_REVOCATION_CACHE_SECONDS", tokens.REVOCATION_CACHE_SECONDS))
    cache = _access_cache()
    key = (kind, subject)
    with cache.lock:
        hit = cache.entries.get(key)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    found = read_access_list(kind, subject)
    with cache.lock:
        if len(cache.entries) > 4096:
            cache.entries.clear()
        cache.entries[key] = (time.monotonic(), found)
    return found


def practitioner_may_see(username: str, patient: str) -> bool:
    """Whether the stored access list of user *username* (``smart grant-access --username``)
    holds Patient *patient*: no launch, standalone or EHR, gives a practitioner a patient
    beyond it (SMART Imaging Access: missing authorization is not authorization)."""
    allowed = stored_patients(ACCESS_USER, username)
    return allowed is None or patient in allowed


def forget_access() -> None:
    """Drop this app's cached access lists (after a grant or revocation)."""
    cache = _access_cache()
    with cache.lock:
        cache.entries.clear()
