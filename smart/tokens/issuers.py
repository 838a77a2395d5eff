"""Access tokens issued by trusted EHR authorization servers (SMART Imaging Access: the EHR
issues the token, the facade is its resource server).

A JWT whose ``iss`` is a trusted issuer is verified against that issuer's JWK Set; any other
token that is not the facade's own (opaque) is introspected (RFC 7662, SMART App Launch 2.2
§Token Introspection) at the trusted issuers that have an introspection credential. The
issuer's endpoints come from its ``.well-known/smart-configuration`` (else its OpenID
discovery). What is fetched is cached per app:

- discovery documents and JWK Sets for ``SMART_EHR_METADATA_CACHE_SECONDS`` (a JWK Set is
  fetched again at once for an unknown ``kid``, at most every :data:`UNKNOWN_KID_BACKOFF` s);
- each token's verdict under the SHA-256 of the token (never the token itself): an accepted
  token until ``min(exp, SMART_EHR_TOKEN_CACHE_SECONDS)``, a refused one for
  ``SMART_EHR_INACTIVE_CACHE_SECONDS``;
- the trusted issuers themselves (the database) for :data:`ISSUER_CACHE_SECONDS`.

An issuer that cannot be reached, answers late or answers nonsense raises
:class:`IssuerUnavailable` (503 with ``Retry-After``): never "active" by default.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote_plus

import requests
from cachetools import TLRUCache
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, import_key
from sqlalchemy import select

from smart.store.db import get_session
from smart.store.models import TrustedIssuer
from smart.tokens.jwt import InvalidToken, fhir_base

log = logging.getLogger(__name__)

#: Signature algorithms accepted from an EHR (asymmetric only: never ``none``, never HS*,
#: whose "secret" would be the issuer's public key; RFC 8725 §3.1-3.2).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
#: Seconds the trusted-issuer table is trusted before it is read again.
ISSUER_CACHE_SECONDS = 5.0
#: Least seconds between two JWK Set fetches caused by an unknown ``kid``.
UNKNOWN_KID_BACKOFF = 10.0
#: Verdicts kept per app.
TOKEN_CACHE_SIZE = 8192
#: Configuration keys and their defaults (``fhir_facade.config.SETTINGS`` reads them from the environment).
DEFAULTS = {
    "SMART_EHR_TOKEN_CACHE_SECONDS": 60.0,
    "SMART_EHR_INACTIVE_CACHE_SECONDS": 5.0,
    "SMART_EHR_METADATA_CACHE_SECONDS": 3600.0,
    "SMART_EHR_PATIENT_CACHE_SECONDS": 300.0,
    "SMART_EHR_TIMEOUT": 5.0,
    "SMART_EHR_RETRY_AFTER": 5,
}
#: Claims kept of an EHR token (RFC 9068 §2.2, SMART App Launch 2.2 §Token Introspection).
CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "patient", "encounter", "fhirUser")


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


@dataclass(frozen=True)
class EhrToken:
    """An accepted EHR access token: its claims and the issuer that vouched for them."""

    claims: dict
    issuer: Issuer
    #: ``time.monotonic()`` until which this verdict may be reused (min(exp, the bound)).
    until: float = 0.0


def _verdict_ttu(_key, value, now):
    return value[1]


class _State:
    """Per-app caches (see the module docstring) and counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.http = requests.Session()
        self.issuers: dict[str, Issuer] = {}
        self.issuers_at = float("-inf")
        self.metadata: dict[str, tuple[float, dict]] = {}
        self.jwks: dict[str, tuple[float, KeySet]] = {}
        self.kid_refetched: dict[str, float] = {}
        #: sha256(token) -> (EhrToken or InvalidToken, monotonic expiry)
        self.verdicts: TLRUCache = TLRUCache(TOKEN_CACHE_SIZE, ttu=_verdict_ttu, timer=time.monotonic)
        #: sha256(token) -> (what the caller built of an accepted token, monotonic expiry): the
        #: warm path of smart.authz, one dict look-up
        self.grants: dict[str, tuple[object, float]] = {}
        #: introspection requests sent (a benchmark reads it)
        self.introspections = 0


def state() -> _State:
    """This app's caches."""
    found = current_app.extensions.get("smart_issuers")
    if found is None:
        found = current_app.extensions.setdefault("smart_issuers", _State())
    return found


def forget() -> None:
    """Drop every cache of this app (after ``add-issuer`` / ``remove-issuer``)."""
    current_app.extensions["smart_issuers"] = _State()


def trusted_issuers() -> dict[str, Issuer]:
    """The trusted issuers by ``iss``, read from the database at most every few seconds."""
    st = state()
    if time.monotonic() - st.issuers_at > ISSUER_CACHE_SECONDS:
        rows = get_session().scalars(select(TrustedIssuer)).all()
        st.issuers = {row.issuer: Issuer.of(row) for row in rows}
        st.issuers_at = time.monotonic()
    return st.issuers


def token_key(token: str) -> str:
    """The cache key of *token*: its SHA-256, so no cache and no log holds a usable token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- fetching ---------------------------------------------------------------------------------

def _fetch_json(method: str, url: str, quiet: bool = False, **kwargs) -> dict:
    """One request to an issuer; a JSON object, or :class:`IssuerUnavailable` (never a 500).
    Failures are logged (method, URL, status or error type: never a token), unless *quiet*."""
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
        found = _fetch_json("GET", base + "/.well-known/smart-configuration", quiet=True)
    except IssuerUnavailable:
        found = _fetch_json("GET", base + "/.well-known/openid-configuration")
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
    found = _fetch_json("GET", uri).get("keys")
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


def _has_kid(keys: KeySet, kid: str | None) -> bool:
    return any(key.kid == kid for key in keys) if kid else len(keys.keys) > 0


def key_set_for(issuer: Issuer, kid: str | None) -> KeySet:
    """The issuer's JWK Set, fetched again (at most every :data:`UNKNOWN_KID_BACKOFF` s) when it
    lacks *kid* (rotation: RFC 7517 §4.5, OIDC Core §10.1.1)."""
    keys = _key_set(issuer)
    if _has_kid(keys, kid):
        return keys
    st = state()
    if time.monotonic() - st.kid_refetched.get(issuer.issuer, float("-inf")) >= UNKNOWN_KID_BACKOFF:
        st.kid_refetched[issuer.issuer] = time.monotonic()
        keys = _key_set(issuer, refetch=True)
    return keys


# --- verifying --------------------------------------------------------------------------------

def _segment(token: str, index: int) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested arrays
        return None
    return value if isinstance(value, dict) else None


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a JWT claims (unverified: it only says whose keys to check), else ``None``."""
    payload = _segment(token, 1)
    iss = payload.get("iss") if payload else None
    return iss if isinstance(iss, str) else None


def _audience(issuer: Issuer) -> str:
    return issuer.audience or fhir_base()


def check_claims(claims: dict, issuer: Issuer) -> dict:
    """Check the claims of an EHR token (from its JWT or its introspection) and keep :data:`CLAIMS`.

    ``exp`` must be in the future, ``nbf`` past, ``aud`` must be there and name the facade's
    FHIR base or the configured audience (RFC 9068 §4, SMART App Launch 2.2 ``aud``; an
    introspection answer without ``aud`` may describe a token meant for another resource
    server, RFC 8707 §2, so it is refused: fail closed), ``scope`` a string.

    Raises
    ------
    InvalidToken
    """
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= time.time():
        raise InvalidToken("The access token expired.")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf > time.time() + 60:
        raise InvalidToken("The access token is not valid yet.")
    if claims.get("iss", issuer.issuer) != issuer.issuer:
        raise InvalidToken("The access token has the wrong issuer.")
    aud = claims.get("aud")
    wanted = _audience(issuer)
    if aud != wanted and not (isinstance(aud, list) and wanted in aud):
        raise InvalidToken("The access token is not meant for this FHIR server.")
    if not isinstance(claims.get("scope", ""), str):
        raise InvalidToken("The access token has a malformed scope.")
    patient = claims.get("patient")
    if patient is not None and not isinstance(patient, str):
        raise InvalidToken("The access token has a malformed patient.")
    kept = {name: claims[name] for name in CLAIMS if name in claims}
    kept["exp"] = int(exp)
    kept["iss"] = issuer.issuer
    return kept


def verify_jwt(token: str, issuer: Issuer) -> dict:
    """Verify a JWT access token of *issuer* (RFC 9068 §4) against its JWK Set.

    Raises
    ------
    InvalidToken
        An algorithm outside :data:`ALGORITHMS`, an unknown key, a bad signature, bad claims.
    IssuerUnavailable
        If the issuer's discovery or JWK Set cannot be read.
    """
    header = _segment(token, 0) or {}
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidToken(f"The access token's algorithm is not accepted ({str(alg)[:16]}).")
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    keys = key_set_for(issuer, kid)
    if not _has_kid(keys, kid):
        raise InvalidToken("The access token is signed with an unknown key.")
    try:
        claims = jwt.decode(token, keys, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidToken("The access token signature is invalid.") from exc
    if "aud" not in claims:
        raise InvalidToken("The access token is not meant for this FHIR server.")
    return check_claims(claims, issuer)


def private_key(pem: str):
    """The RSA or EC private key in PEM text *pem* (a joserfc key).

    Raises
    ------
    ValueError
        If *pem* holds neither, or a public key only.
    """
    for key_type in ("RSA", "EC"):
        try:
            key = import_key(pem, key_type)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            return key
    raise ValueError("not an RSA or EC private key in PEM")


def _client_assertion(issuer: Issuer, endpoint: str) -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523 §2.2, §3) for the introspection request."""
    key = private_key(issuer.introspection_key)
    alg = "ES256" if key.key_type == "EC" else "RS256"
    issued = int(time.time())
    claims = {"iss": issuer.introspection_client_id, "sub": issuer.introspection_client_id,
              "aud": endpoint, "iat": issued, "exp": issued + 60, "jti": secrets.token_urlsafe(16)}
    return jwt.encode({"alg": alg, "typ": "JWT"}, claims, key, algorithms=[alg])


def introspect(token: str, issuer: Issuer) -> dict | None:
    """Ask *issuer*'s introspection endpoint about *token* (RFC 7662 §2, with the facade's
    credential: ``client_secret_basic`` or ``private_key_jwt``).

    Returns
    -------
    dict or None
        The checked claims (:func:`check_claims`) of an active token; ``None`` when the issuer
        answers anything but ``"active": true``.

    Raises
    ------
    InvalidToken
        An active token with bad claims.
    IssuerUnavailable
        The issuer cannot be reached in time, or answers an error or no JSON object.
    """
    endpoint = metadata(issuer).get("introspection_endpoint")
    if not isinstance(endpoint, str):
        raise IssuerUnavailable("the EHR's discovery document has no introspection_endpoint")
    data = {"token": token, "token_type_hint": "access_token"}
    auth = None
    if issuer.introspection_key:
        data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        data["client_assertion"] = _client_assertion(issuer, endpoint)
        data["client_id"] = issuer.introspection_client_id
    else:  # RFC 6749 §2.3.1: both form-encoded, then Basic
        auth = requests.auth.HTTPBasicAuth(_form(issuer.introspection_client_id), _form(issuer.introspection_secret))
    state().introspections += 1
    answer = _fetch_json("POST", endpoint, data=data, auth=auth, headers={"Accept": "application/json"})
    if answer.get("active") is not True:
        return None
    return check_claims(answer, issuer)


def _form(value: str | None) -> str:
    return quote_plus(value or "")


def _decide(token: str) -> EhrToken:
    issuers = trusted_issuers()
    iss = unverified_issuer(token)
    if iss is not None:
        issuer = issuers.get(iss)
        if issuer is None:
            raise InvalidToken("The access token's issuer is not trusted here.")
        return EhrToken(verify_jwt(token, issuer), issuer)
    unavailable: IssuerUnavailable | None = None
    for issuer in issuers.values():
        if not issuer.introspects:
            continue
        try:
            claims = introspect(token, issuer)
        except IssuerUnavailable as exc:
            unavailable = exc
            continue
        if claims is not None:
            return EhrToken(claims, issuer)
    if unavailable is not None:
        raise unavailable
    raise InvalidToken("The access token is not active.")


def decode_ehr_token(token: str) -> EhrToken:
    """Accept an access token issued by a trusted EHR, or refuse it.

    A JWT naming a trusted ``iss`` is verified locally (:func:`verify_jwt`); any other token
    is introspected at each trusted issuer with a credential (:func:`introspect`). Verdicts
    are cached under the token's hash (module docstring); a cached acceptance still ends at
    the token's ``exp``.

    Parameters
    ----------
    token : str
        The bearer token (RFC 6750 §2.1).

    Returns
    -------
    EhrToken

    Raises
    ------
    InvalidToken
        Untrusted issuer, inactive, expired, wrong audience, unknown key, refused algorithm...
    IssuerUnavailable
        The issuer could not vouch for it in time (never cached).
    """
    st = state()
    key = token_key(token)
    with st.lock:
        hit = st.verdicts.get(key)
    if hit is not None:
        verdict = hit[0]
        if isinstance(verdict, InvalidToken):
            raise verdict
        if verdict.claims["exp"] > time.time():
            return verdict
    now = time.monotonic()
    try:
        verdict = _decide(token)
    except InvalidToken as exc:
        with st.lock:
            st.verdicts[key] = (exc, now + float(setting("SMART_EHR_INACTIVE_CACHE_SECONDS")))
        raise
    bound = min(verdict.claims["exp"] - time.time(), float(setting("SMART_EHR_TOKEN_CACHE_SECONDS")))
    verdict = EhrToken(verdict.claims, verdict.issuer, now + bound)
    with st.lock:
        st.verdicts[key] = (verdict, now + bound)
    return verdict


def cached_grant(key: str):
    """What :func:`keep_grant` kept for the token of hash *key*, while its verdict stands, else None."""
    hit = state().grants.get(key)
    if hit is None or hit[1] <= time.monotonic() or hit[0].claims["exp"] <= time.time():
        return None
    return hit[0]


def keep_grant(key: str, grant, until: float) -> None:
    """Keep *grant* (built of an accepted token) under its hash *key* until *until* (monotonic)."""
    grants = state().grants
    if len(grants) >= TOKEN_CACHE_SIZE:
        grants.clear()
    grants[key] = (grant, until)
