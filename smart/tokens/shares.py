"""Share links (issue 15): a patient shows one study, or all their studies, to someone without an
account, instead of burning a CD.

A share is a row of :class:`smart.store.models.ShareLink`; its link carries a secret of 256 bits
(``secrets.token_urlsafe(32)``) that is stored only as its SHA-256 and never logged. Redeeming the
link (after its PIN, if it has one) mints a short-lived access token of the facade
(:func:`mint_token`) with the scope :data:`SHARE_SCOPE`, the patient, and two more claims: ``share``
(the share's id) and ``study`` (its StudyInstanceUID; absent for a share of all studies). The one
access policy (:mod:`smart.authz`) binds such a token to its study and asks :func:`is_active` on
every request, so a revoked or expired share stops its tokens at once in this process and within
``SMART_REVOCATION_CACHE_SECONDS`` in others.

Events a share goes through are announced to listeners (:func:`add_listener`; the audit trail
subscribes): ``created``, ``redeemed``, ``refused`` (wrong PIN, throttled, expired or revoked
link) and ``revoked``. No listener gets a secret.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable

from flask import current_app
from sqlalchemy import select

from smart.store.db import get_session
from smart.store.models import ShareLink, digest, hash_secret, now
from smart.tokens import jwt as tokens

#: Default life of a share link (issue 15: 7 days); ``FACADE_SHARE_MAX_SECONDS`` bounds it.
DEFAULT_SHARE_SECONDS = 7 * 24 * 3600
#: Default maximum life of a share link (config ``FACADE_SHARE_MAX_SECONDS``).
DEFAULT_SHARE_MAX_SECONDS = 30 * 24 * 3600
#: Life of a token a share mints (and never beyond the share's own expiry).
SHARE_TOKEN_LIFETIME = 3600
#: What a share's token may do: read and search ImagingStudy (DICOMweb and FHIR read), of its
#: patient, within its study (the ``study`` claim; :meth:`smart.authz.AccessGrant.check_study`).
SHARE_SCOPE = "patient/ImagingStudy.rs"
#: The ``client_id`` of a share's tokens (no registered client: the recipient has no app).
SHARE_CLIENT_ID = "share-link"
#: ``study`` value of a share of every study of the patient.
ALL_STUDIES = "all"
#: A PIN: 4 to 12 digits.
PIN = re.compile(r"^[0-9]{4,12}$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

EVENTS = ("created", "redeemed", "refused", "revoked")
_listeners: list[Callable[[str, ShareLink | None, dict], None]] = []


class ShareError(ValueError):
    """A share request that cannot be honoured; ``description`` says why (for the OAuth-shaped
    ``invalid_request`` answer)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


# --- events (hook points for the audit trail) ----------------------------------------------
def add_listener(listener: Callable[[str, ShareLink | None, dict], None]) -> None:
    """Call *listener(event, share, details)* on every share event (:data:`EVENTS`).

    *share* is the row (its ``secret_hash``, never the secret) or ``None`` for a link that
    matches no share; *details* holds ``address`` and, for ``refused``, ``reason``.
    """
    _listeners.append(listener)


def announce(event: str, share: ShareLink | None, **details) -> None:
    """Tell every listener of *event* (one of :data:`EVENTS`); a failing listener is not ours to fix."""
    for listener in list(_listeners):
        listener(event, share, details)


# --- creating, listing, revoking -------------------------------------------------------------
def max_seconds() -> int:
    """The longest life a share may have (``FACADE_SHARE_MAX_SECONDS``, default 30 days)."""
    return int(current_app.config.get("FACADE_SHARE_MAX_SECONDS") or DEFAULT_SHARE_MAX_SECONDS)


def parse_request(data) -> tuple[str, int, str | None]:
    """The study, life in seconds and PIN of a ``POST /auth/shares`` body.

    Raises
    ------
    ShareError
        A missing or malformed study, a life that is not a positive integer or is beyond
        :func:`max_seconds`, a PIN that is not 4 to 12 digits.
    """
    if not isinstance(data, dict):
        raise ShareError("the body must be a JSON object")
    study = data.get("study")
    if not isinstance(study, str) or not (study == ALL_STUDIES or (len(study) <= 64 and _UID.match(study))):
        raise ShareError('study must be a StudyInstanceUID or "all"')
    expires_in = data.get("expires_in", DEFAULT_SHARE_SECONDS)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise ShareError("expires_in must be a positive number of seconds")
    if expires_in > max_seconds():
        raise ShareError(f"expires_in may be at most {max_seconds()} seconds")
    pin = data.get("pin")
    if pin in (None, ""):
        pin = None
    elif not isinstance(pin, str) or not PIN.match(pin):
        raise ShareError("pin must be 4 to 12 digits")
    return study, expires_in, pin


def create_share(patient: str, study: str, expires_in: int, pin: str | None, created_by: str) -> tuple[ShareLink, str]:
    """Store a new share of *study* (or :data:`ALL_STUDIES`) of Patient *patient*.

    The caller has checked that *patient* may share it. Returns the row and the link's
    secret, which exists nowhere else: only its SHA-256 is stored.
    """
    secret = secrets.token_urlsafe(32)
    share = ShareLink(id=secrets.token_urlsafe(12), secret_hash=digest(secret), patient=patient, study=study,
                      created_by=created_by[:256], pin_hash=hash_secret(pin) if pin else None,
                      created_at=now(), expires_at=now() + expires_in, uses=0)
    session = get_session()
    session.add(share)
    session.commit()
    announce("created", share)
    return share, secret


def shares_of(patient: str) -> list[ShareLink]:
    """Patient *patient*'s shares that are not revoked, newest first (expired ones included)."""
    query = select(ShareLink).where(ShareLink.patient == patient, ShareLink.revoked_at.is_(None))
    return list(get_session().scalars(query.order_by(ShareLink.created_at.desc(), ShareLink.id)))


def describe(share: ShareLink) -> dict:
    """A share as ``GET /auth/shares`` lists it (no secret, no PIN)."""
    return {"id": share.id, "study": share.study, "created_at": share.created_at, "expires_at": share.expires_at,
            "expired": share.expires_at <= now(), "has_pin": share.pin_hash is not None,
            "last_used_at": share.last_used_at, "uses": share.uses}


def revoke(share_id: str, patient: str) -> bool:
    """Revoke Patient *patient*'s share *share_id* at once; ``False`` when they have no such share.

    Its tokens are refused from the next request in this process, and within
    ``SMART_REVOCATION_CACHE_SECONDS`` in others (:func:`is_active`).
    """
    session = get_session()
    share = session.get(ShareLink, share_id)
    if share is None or share.patient != patient or share.revoked_at is not None:
        return False
    share.revoked_at = now()
    session.commit()
    forget()
    announce("revoked", share)
    return True


# --- redeeming -----------------------------------------------------------------------------
def find(secret: str) -> ShareLink | None:
    """The share whose link carries *secret*, if it exists and is neither revoked nor expired."""
    if not isinstance(secret, str) or not 16 <= len(secret) <= 128:
        return None
    share = get_session().scalars(select(ShareLink).where(ShareLink.secret_hash == digest(secret))).first()
    if share is None or share.revoked_at is not None or share.expires_at <= now():
        return None
    return share


def mint_token(share: ShareLink) -> tuple[str, dict]:
    """An access token for the recipient of *share*: :data:`SHARE_SCOPE` of its patient, bound to
    its study and its id, for :data:`SHARE_TOKEN_LIFETIME` seconds or until the share expires.

    The share's use is counted (``uses``, ``last_used_at``).
    """
    lifetime = max(1, min(SHARE_TOKEN_LIFETIME, share.expires_at - now()))
    extra = {"share": share.id}
    if share.study != ALL_STUDIES:
        extra["study"] = share.study
    value, claims = tokens.issue_access_token(SHARE_CLIENT_ID, f"share:{share.id}", SHARE_SCOPE,
                                              context={"patient": share.patient}, lifetime=lifetime,
                                              extra_claims=extra)
    share.uses = (share.uses or 0) + 1
    share.last_used_at = now()
    get_session().commit()
    announce("redeemed", share)
    return value, claims


# --- checked on every request --------------------------------------------------------------
class _ActiveCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, int | None]] = {}


def _cache() -> _ActiveCache:
    return current_app.extensions.setdefault("smart_shares", _ActiveCache())


def forget() -> None:
    """Drop this app's cached share states (after a revocation here)."""
    cache = _cache()
    with cache.lock:
        cache.entries.clear()


def is_active(share_id: str) -> bool:
    """Whether share *share_id* is neither revoked nor expired.

    Read from the database at most every ``SMART_REVOCATION_CACHE_SECONDS`` per share (as
    revocations of tokens are); the expiry is compared on every call.
    """
    ttl = float(current_app.config.get("SMART_REVOCATION_CACHE_SECONDS", tokens.REVOCATION_CACHE_SECONDS))
    cache = _cache()
    with cache.lock:
        hit = cache.entries.get(share_id)
    if hit is None or time.monotonic() - hit[0] >= ttl:
        share = get_session().get(ShareLink, share_id)
        until = None if share is None or share.revoked_at is not None else share.expires_at
        with cache.lock:
            if len(cache.entries) > 4096:
                cache.entries.clear()
            cache.entries[share_id] = (time.monotonic(), until)
        hit = (0.0, until)
    return hit[1] is not None and hit[1] > time.time()


# --- who owns a study (the facade knows; smart asks) -----------------------------------------
def register_study_owners(app, owners: Callable[[str], frozenset[str] | None]) -> None:
    """Register how the Patient ids a study is filed under are found (the PACS's, which smart
    cannot ask itself): *owners(study_uid)* returns them, or ``None`` for an unknown study."""
    app.extensions["smart_study_owners"] = owners


def study_owners(study_uid: str) -> frozenset[str] | None:
    """The Patient ids study *study_uid* is filed under (every series), ``None`` if unknown.

    Raises
    ------
    ShareError
        When the facade registered no rule (:func:`register_study_owners`).
    """
    owners = current_app.extensions.get("smart_study_owners")
    if owners is None:
        raise ShareError("this server cannot tell whose a study is")
    return owners(study_uid)


def register_patient_studies(app, studies: Callable[[str], list[dict]]) -> None:
    """Register how a patient's studies are listed for the "My images" page: *studies(patient)*
    returns dicts with ``uid``, ``date``, ``description`` and ``modalities``, newest first."""
    app.extensions["smart_patient_studies"] = studies


def patient_studies(patient: str) -> list[dict]:
    """The studies of Patient *patient* (:func:`register_patient_studies`); empty without a rule."""
    studies = current_app.extensions.get("smart_patient_studies")
    return [] if studies is None else studies(patient)
