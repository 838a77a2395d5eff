"""Trusted EHR issuers and what the facade fetches from them (SMART Imaging Access: the EHR
issues the token, the facade is its resource server): the trusted-issuer table, each issuer's
discovery document and JWK Set, and the settings of EHR tokens (:data:`DEFAULTS`).

The issuer's endpoints come from its ``.well-known/smart-configuration`` (else its OpenID
discovery). What is fetched is cached per app:

- discovery documents and JWK Sets for ``SMART_EHR_METADATA_CACHE_SECONDS`` (a JWK Set is
  fetched again at once for an unknown ``kid``, at most every *backoff* s: :func:`key_set_for`);
- the trusted issuers themselves (the database) for :data:`ISSUER_CACHE_SECONDS`.

Verifying and introspecting tokens with them is :mod:`smart.tokens.issuers`. An issuer that
cannot be reached, answers late or answers nonsense raises :class:`IssuerUnavailable` (503 with
``Retry-After``): never "active" by default.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import requests
from flask import current_app
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select

from smart.store.db import get_session
from smart.store.models import TrustedIssuer

log = logging.getLogger(__name__)

#: Seconds the trusted-issuer table is trusted before it is read again.
ISSUER_CACHE_SECONDS = 5.0
#: Configuration keys and their defaults (``fhir_facade.config.SETTINGS`` reads them from the environment).
DEFAULTS = {
    "SMART_EHR_TOKEN_CACHE_SECONDS": 60.0,
    "SMART_EHR_INACTIVE_CACHE_SECONDS": 5.0,
    "SMART_EHR_METADATA_CACHE_SECONDS": 3600.0,
    "SMART_EHR_PATIENT_CACHE_SECONDS": 300.0,
    "SMART_EHR_TIMEOUT": 5.0,
    "SMART_EHR_RETRY_AFTER": 5,
}


def setting(name: str):
    """The configured value of one of :data:`DEFAULTS` (needs an app context)."""
    value = current_app.config.get(name)
    return DEFAULTS[name] if value is None else value


class IssuerUnavailable(Exception):
    """A trusted issuer (or its FHIR server) could not be asked in time: answer 503 with
    ``Retry-After`` (RFC 9110 §15.6.4, §10.2.3)."""

    def __init__(self, description: str = "the EHR's authorization server is unavailable"):
        super().__init__(description)
        self.description = description

    @property
    def retry_after(self) -> int:
        return int(setting("SMART_EHR_RETRY_AFTER"))


@dataclass(frozen=True)
class Issuer:
    """A trusted issuer's configuration (a detached copy of its :class:`TrustedIssuer` row)."""

    issuer: str
    patient_identifier_system: str
    fhir_base: str
    audience: str | None
    introspection_client_id: str | None
    introspection_secret: str | None
    introspection_key: str | None

    @classmethod
    def of(cls, row: TrustedIssuer) -> Issuer:
        return cls(row.issuer, row.patient_identifier_system, (row.fhir_base or row.issuer).rstrip("/"),
                   row.audience, row.introspection_client_id, row.introspection_secret, row.introspection_key)

    @property
    def introspects(self) -> bool:
        return bool(self.introspection_client_id and (self.introspection_secret or self.introspection_key))


class _State:
    """Per-app caches of what was read or fetched (see the module docstring)."""

    def __init__(self) -> None:
        self.http = requests.Session()
        self.issuers: dict[str, Issuer] = {}
        self.issuers_at = float("-inf")
        self.metadata: dict[str, tuple[float, dict]] = {}
        self.jwks: dict[str, tuple[float, KeySet]] = {}
        self.kid_refetched: dict[str, float] = {}


def state() -> _State:
    """This app's caches of issuers, discovery documents and JWK Sets (and its HTTP session)."""
    found = current_app.extensions.get("smart_issuers")
    if found is None:
        found = current_app.extensions.setdefault("smart_issuers", _State())
    return found


def forget() -> None:
    """Drop this app's issuers, discovery documents and JWK Sets (after ``add-issuer`` /
    ``remove-issuer``: :func:`smart.tokens.issuers.forget` drops the verdicts too)."""
    current_app.extensions["smart_issuers"] = _State()


def trusted_issuers() -> dict[str, Issuer]:
    """The trusted issuers by ``iss``, read from the database at most every few seconds."""
    st = state()
    if time.monotonic() - st.issuers_at > ISSUER_CACHE_SECONDS:
        rows = get_session().scalars(select(TrustedIssuer)).all()
        st.issuers = {row.issuer: Issuer.of(row) for row in rows}
        st.issuers_at = time.monotonic()
    return st.issuers


# --- fetching ---------------------------------------------------------------------------------

def fetch_json(method: str, url: str, quiet: bool = False, **kwargs) -> dict:
    """One request to an issuer, whose answer must be a JSON object (never a 500).

    Failures are logged (method, URL, status or error type: never a token), unless *quiet*.

    Parameters
    ----------
    method, url : str
        The request, sent with this app's session and ``SMART_EHR_TIMEOUT``.
    quiet : bool
        Log a non-200 answer at debug level only (a first discovery attempt).
    **kwargs
        Passed to :meth:`requests.Session.request` (``data``, ``auth``, ``headers``).

    Returns
    -------
    dict

    Raises
    ------
    IssuerUnavailable
        Unreachable or slow, an answer other than 200, or a body that is not a JSON object.
    """
    try:
        response = state().http.request(method, url, timeout=float(setting("SMART_EHR_TIMEOUT")), **kwargs)
    except requests.RequestException as exc:
        log.warning("EHR request failed: %s %s (%s)", method, url, type(exc).__name__)
        raise IssuerUnavailable() from exc
    if response.status_code != 200:
        (log.debug if quiet else log.warning)("EHR answered %s to %s %s", response.status_code, method, url)
        raise IssuerUnavailable(f"the EHR's server answered {response.status_code}")
    try:
        body = response.json()
    except (ValueError, RecursionError) as exc:
        raise IssuerUnavailable("the EHR's server answered something that is not JSON") from exc
    if not isinstance(body, dict):
        raise IssuerUnavailable("the EHR's server answered something that is not a JSON object")
    return body


def metadata(issuer: Issuer) -> dict:
    """The issuer's discovery document: ``.well-known/smart-configuration`` (SMART App Launch
    2.2 §Using well-known), else ``.well-known/openid-configuration`` (OIDC Discovery §4).

    Raises
    ------
    IssuerUnavailable
        If neither can be read, or the document names another issuer (OIDC Discovery §4.3).
    """
    st = state()
    hit = st.metadata.get(issuer.issuer)
    if hit is not None and time.monotonic() - hit[0] < float(setting("SMART_EHR_METADATA_CACHE_SECONDS")):
        return hit[1]
    base = issuer.issuer.rstrip("/")
    try:
        found = fetch_json("GET", base + "/.well-known/smart-configuration", quiet=True)
    except IssuerUnavailable:
        found = fetch_json("GET", base + "/.well-known/openid-configuration")
    if found.get("issuer", issuer.issuer) != issuer.issuer:
        raise IssuerUnavailable("the EHR's discovery document names another issuer")
    st.metadata[issuer.issuer] = (time.monotonic(), found)
    return found


def _key_set(issuer: Issuer, refetch: bool = False) -> KeySet:
    st = state()
    hit = st.jwks.get(issuer.issuer)
    fresh = hit is not None and time.monotonic() - hit[0] < float(setting("SMART_EHR_METADATA_CACHE_SECONDS"))
    if fresh and not refetch:
        return hit[1]
    uri = metadata(issuer).get("jwks_uri")
    if not isinstance(uri, str):
        raise IssuerUnavailable("the EHR's discovery document has no jwks_uri")
    found = fetch_json("GET", uri).get("keys")
    usable = [key for key in (found if isinstance(found, list) else []) if _importable(key)]
    if not usable:
        raise IssuerUnavailable("the EHR's JWK Set holds no usable key")
    keys = KeySet.import_key_set({"keys": usable})
    st.jwks[issuer.issuer] = (time.monotonic(), keys)
    return keys


def _importable(jwk) -> bool:
    """Whether *jwk* is an RSA or EC public key joserfc can use. Others are ignored, not fatal
    (RFC 7517 §5: ignore JWKs whose ``kty`` is not understood); joserfc raises KeyError for an
    unknown ``crv``, so each key is tried alone."""
    if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
        return False
    try:
        KeySet.import_key_set({"keys": [jwk]})
    except (JoseError, ValueError, TypeError, KeyError):
        return False
    return True


def has_kid(keys: KeySet, kid: str | None) -> bool:
    """Whether *keys* holds the key *kid*; without a *kid*, whether it holds any key."""
    return any(key.kid == kid for key in keys) if kid else len(keys.keys) > 0


def key_set_for(issuer: Issuer, kid: str | None, backoff: float) -> KeySet:
    """The issuer's JWK Set, fetched again (at most every *backoff* s, the verifier's
    :data:`smart.tokens.issuers.UNKNOWN_KID_BACKOFF`) when it lacks *kid* (rotation: RFC 7517
    §4.5, OIDC Core §10.1.1).

    Raises
    ------
    IssuerUnavailable
        The discovery document or the JWK Set cannot be read, or the set holds no usable key.
    """
    keys = _key_set(issuer)
    if has_kid(keys, kid):
        return keys
    st = state()
    if time.monotonic() - st.kid_refetched.get(issuer.issuer, float("-inf")) >= backoff:
        st.kid_refetched[issuer.issuer] = time.monotonic()
        keys = _key_set(issuer, refetch=True)
    return keys
