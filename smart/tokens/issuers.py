"""Access tokens issued by trusted EHR authorization servers (SMART Imaging Access: the EHR
issues the token, the facade is its resource server): verified, introspected, and the verdict
cached.

A JWT whose ``iss`` is a trusted issuer is verified against that issuer's JWK Set; any other
token that is not the facade's own (opaque) is introspected (RFC 7662, SMART App Launch 2.2
§Token Introspection) at the trusted issuers that have an introspection credential. The
trusted issuers, their discovery documents and JWK Sets are :mod:`smart.tokens.ehr_metadata`
(its names used elsewhere are re-exported here). Cached per app here:

- each token's verdict under the SHA-256 of the token (never the token itself): an accepted
  token until ``min(exp, SMART_EHR_TOKEN_CACHE_SECONDS)``, a refused one for
  ``SMART_EHR_INACTIVE_CACHE_SECONDS``;
- what :mod:`smart.authz` built of an accepted token (:func:`keep_grant`), as long as its verdict.

An issuer that cannot be reached, answers late or answers nonsense raises
:class:`IssuerUnavailable` (503 with ``Retry-After``): never "active" by default.
"""
from __future__ import annotations

import base64
import hashlib
import json
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
from joserfc.jwk import import_key

from smart.tokens import ehr_metadata
from smart.tokens.ehr_metadata import (DEFAULTS, ISSUER_CACHE_SECONDS, Issuer, IssuerUnavailable, fetch_json, has_kid,
                                       key_set_for, metadata, setting, trusted_issuers)
from smart.tokens.jwt import InvalidToken, fhir_base

__all__ = [
    "ALGORITHMS", "UNKNOWN_KID_BACKOFF", "TOKEN_CACHE_SIZE", "CLAIMS", "EhrToken", "state", "forget", "token_key",
    "unverified_issuer", "check_claims", "verify_jwt", "private_key", "introspect", "decode_ehr_token",
    "cached_grant", "keep_grant",
    # smart.tokens.ehr_metadata's, for the callers that know them from here
    "DEFAULTS", "ISSUER_CACHE_SECONDS", "Issuer", "IssuerUnavailable", "metadata", "setting", "trusted_issuers",
]

#: Signature algorithms accepted from an EHR (asymmetric only: never ``none``, never HS*,
#: whose "secret" would be the issuer's public key; RFC 8725 §3.1-3.2).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
#: Least seconds between two JWK Set fetches caused by an unknown ``kid``.
UNKNOWN_KID_BACKOFF = 10.0
#: Verdicts kept per app.
TOKEN_CACHE_SIZE = 8192
#: Claims kept of an EHR token (RFC 9068 §2.2, SMART App Launch 2.2 §Token Introspection).
CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "patient", "encounter", "fhirUser")


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
    """Per-app caches of verdicts and grants (see the module docstring) and counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: sha256(token) -> (EhrToken or InvalidToken, monotonic expiry)
        self.verdicts: TLRUCache = TLRUCache(TOKEN_CACHE_SIZE, ttu=_verdict_ttu, timer=time.monotonic)
        #: sha256(token) -> (what the caller built of an accepted token, monotonic expiry): the
        #: warm path of smart.authz, one dict look-up
        self.grants: dict[str, tuple[object, float]] = {}
        #: introspection requests sent (a benchmark reads it)
        self.introspections = 0


def state() -> _State:
    """This app's caches of verdicts and grants."""
    found = current_app.extensions.get("smart_ehr_tokens")
    if found is None:
        found = current_app.extensions.setdefault("smart_ehr_tokens", _State())
    return found


def forget() -> None:
    """Drop every cache of this app, verdicts and metadata alike (after ``add-issuer`` /
    ``remove-issuer``)."""
    ehr_metadata.forget()
    current_app.extensions["smart_ehr_tokens"] = _State()


def token_key(token: str) -> str:
    """The cache key of *token*: its SHA-256, so no cache and no log holds a usable token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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
    keys = key_set_for(issuer, kid, UNKNOWN_KID_BACKOFF)
    if not has_kid(keys, kid):
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
    answer = fetch_json("POST", endpoint, data=data, auth=auth, headers={"Accept": "application/json"})
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
