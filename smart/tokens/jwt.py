"""JWT access tokens and id_tokens: issuing, verifying (fast, cached) and revoking by ``jti``."""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import OrderedDict

from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from smart.store.db import get_database, get_session
from smart.store.models import RevokedToken, now
from smart.tokens import keys

#: Access token lifetime in seconds (issue 4: at most one hour).
ACCESS_TOKEN_LIFETIME = 3600
#: SMART Backend Services access token lifetime (SMART 2.2 §Backend Services: at most 5 min).
BACKEND_TOKEN_LIFETIME = 300
#: id_token lifetime in seconds.
ID_TOKEN_LIFETIME = 3600

#: Verified tokens kept per app so repeated DICOMweb calls skip the RSA check.
VERIFIED_CACHE_SIZE = 4096
#: Default seconds the list of revoked ``jti`` is trusted before it is re-read
#: (config ``SMART_REVOCATION_CACHE_SECONDS``; 0 reads it on every call).
REVOCATION_CACHE_SECONDS = 1.0

#: Claims that :func:`decode_access_token` returns when present.
ACCESS_TOKEN_CLAIMS = (
    "iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope",
    "patient", "encounter", "fhirUser",
)


class InvalidToken(Exception):
    """An access token that must be refused (RFC 6750 §3.1 ``invalid_token``)."""

    description = "The access token is invalid."

    def __init__(self, description: str | None = None):
        if description:
            self.description = description
        super().__init__(self.description)


class _State:
    """Per-app caches: verified tokens (LRU) and the set of revoked ``jti``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.verified: OrderedDict[str, dict] = OrderedDict()
        self.revoked: frozenset[str] = frozenset()
        self.revoked_loaded_at = float("-inf")


def _state() -> _State:
    return current_app.extensions.setdefault("smart_tokens", _State())


def issuer() -> str:
    """Our issuer identifier: ``FACADE_PUBLIC_URL`` (SMART 2.2 §Discovery ``issuer``)."""
    return current_app.config["FACADE_PUBLIC_URL"].rstrip("/")


def fhir_base() -> str:
    """Audience of access tokens: the public FHIR base URL (SMART 2.2 ``aud``)."""
    return issuer() + "/fhir"


def _sign(claims: dict, typ: str) -> str:
    key = keys.current_signing_key()
    header = {"alg": keys.ALG, "kid": key.kid, "typ": typ}
    return jwt.encode(header, claims, key, algorithms=[keys.ALG])


def issue_access_token(
    client_id: str,
    sub: str,
    scope: str,
    context: dict | None = None,
    fhir_user: str | None = None,
    lifetime: int = ACCESS_TOKEN_LIFETIME,
) -> tuple[str, dict]:
    """Sign a JWT access token (RFC 9068 profile, RS256, ``kid`` in the header).

    Parameters
    ----------
    client_id : str
        The client the token is issued to.
    sub : str
        The end user's username, or the client id for Backend Services.
    scope : str
        Granted scopes, space-separated.
    context : dict, optional
        Launch context; ``patient`` and ``encounter`` become claims.
    fhir_user : str, optional
        ``fhirUser`` claim, e.g. ``Patient/123``.
    lifetime : int
        Seconds until ``exp``.

    Returns
    -------
    (str, dict)
        The compact JWT and its claims.
    """
    issued = now()
    claims = {
        "iss": issuer(),
        "sub": sub,
        "aud": fhir_base(),
        "exp": issued + lifetime,
        "iat": issued,
        "jti": secrets.token_urlsafe(24),
        "client_id": client_id,
        "scope": scope,
    }
    for name in ("patient", "encounter"):
        if context and context.get(name):
            claims[name] = context[name]
    if fhir_user:
        claims["fhirUser"] = fhir_user
    return _sign(claims, "at+jwt"), claims


def issue_id_token(
    client_id: str, sub: str, nonce: str | None, fhir_user: str | None, auth_time: int | None = None
) -> str:
    """Sign an OpenID Connect id_token (OIDC Core §2; SMART 2.2 §Scopes for identity data).

    ``aud`` is the client id; ``fhirUser`` is the absolute URL of the user's FHIR resource.
    """
    issued = now()
    claims = {"iss": issuer(), "sub": sub, "aud": client_id, "exp": issued + ID_TOKEN_LIFETIME, "iat": issued}
    if nonce:
        claims["nonce"] = nonce
    if auth_time:
        claims["auth_time"] = auth_time
    if fhir_user:
        claims["fhirUser"] = f"{fhir_base()}/{fhir_user}"
    return _sign(claims, "JWT")


def _header(token: str) -> dict:
    try:
        segment = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("The access token is not a JWT.") from exc
    if not isinstance(header, dict):
        raise InvalidToken("The access token is not a JWT.")
    return header


def _verify(token: str) -> dict:
    """Check signature, ``iss`` and ``aud`` of *token*; return its claims (no exp/revocation check)."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken("The access token is not a JWT.")
    header = _header(token)
    if header.get("alg") != keys.ALG:
        raise InvalidToken("The access token is not signed with RS256.")
    kid = header.get("kid")
    key = keys.verification_keys(kid).get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("The access token is signed with an unknown key.")
    try:
        claims = jwt.decode(token, key, algorithms=[keys.ALG]).claims
    except (JoseError, ValueError) as exc:
        raise InvalidToken("The access token signature is invalid.") from exc
    if claims.get("iss") != issuer():
        raise InvalidToken("The access token has the wrong issuer.")
    aud = claims.get("aud")
    if aud != fhir_base() and not (isinstance(aud, list) and fhir_base() in aud):
        raise InvalidToken("The access token is not meant for this FHIR server.")
    if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("jti"), str):
        raise InvalidToken("The access token lacks exp or jti.")
    if not isinstance(claims.get("scope", ""), str):
        raise InvalidToken("The access token has a malformed scope.")
    return {name: claims[name] for name in ACCESS_TOKEN_CLAIMS if name in claims}


def _revoked_jtis() -> frozenset[str]:
    state = _state()
    ttl = current_app.config.get("SMART_REVOCATION_CACHE_SECONDS", REVOCATION_CACHE_SECONDS)
    if time.monotonic() - state.revoked_loaded_at > ttl:
        with get_database().engine.connect() as conn:
            rows = conn.execute(select(RevokedToken.jti).where(RevokedToken.exp > now()))
            state.revoked = frozenset(row[0] for row in rows)
        state.revoked_loaded_at = time.monotonic()
    return state.revoked


def is_cached(token: str) -> bool:
    """Whether *token* was verified here before (one of ours, still in the cache)."""
    return token in _state().verified


def decode_access_token(token: str) -> dict:
    """Verify a JWT access token issued by this server and return its claims.

    Checks, in order: JWS signature (RS256) with the key named by the header's ``kid``
    among keys not yet expired (RFC 7515 §4.1.4); ``iss`` equals ``FACADE_PUBLIC_URL``;
    ``aud`` equals ``FACADE_PUBLIC_URL + "/fhir"``; ``exp`` is in the future
    (RFC 7519 §4.1.4); ``jti`` is not revoked (RFC 7009). Needs an app context.
    Verified tokens are cached, so warm calls only re-check ``exp`` and revocation.

    Parameters
    ----------
    token : str
        The compact JWT from ``Authorization: Bearer``.

    Returns
    -------
    dict
        ``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``client_id``, ``scope``
        (space-separated), and ``patient``, ``encounter``, ``fhirUser`` when present.

    Raises
    ------
    InvalidToken
        With a ``description`` naming the problem ("... expired", "... revoked", ...).
    """
    state = _state()
    claims = state.verified.get(token)
    if claims is None:
        claims = _verify(token)
        with state.lock:
            state.verified[token] = claims
            while len(state.verified) > VERIFIED_CACHE_SIZE:
                state.verified.popitem(last=False)
    if claims["exp"] <= time.time():
        state.verified.pop(token, None)
        raise InvalidToken("The access token expired.")
    if claims["jti"] in _revoked_jtis():
        raise InvalidToken("The access token has been revoked.")
    return dict(claims)


def verify_unexpired(token: str) -> dict | None:
    """Like :func:`decode_access_token` but return None instead of raising (for introspection)."""
    try:
        return decode_access_token(token)
    except InvalidToken:
        return None


def revoke_jti(jti: str, exp: int) -> None:
    """Record access token *jti* as revoked until *exp*; takes effect at once in this process
    and within ``SMART_REVOCATION_CACHE_SECONDS`` in others."""
    session = get_session()
    if session.get(RevokedToken, jti) is None:
        session.add(RevokedToken(jti=jti, exp=exp))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
    session.execute(delete(RevokedToken).where(RevokedToken.exp <= now()))
    session.commit()
    _state().revoked_loaded_at = float("-inf")


def decode_id_token_hint(token: str) -> dict:
    """Verify an id_token this server issued, given back as ``id_token_hint``, and return its claims.

    RP-Initiated Logout 1.0 §2: the signature and issuer are checked (with any key not yet
    deleted, retired ones included); an expired id_token is still a valid hint.

    Parameters
    ----------
    token : str
        The compact JWT.

    Returns
    -------
    dict
        Its claims (``iss``, ``sub``, ``aud``, ...).

    Raises
    ------
    InvalidToken
        If it is not a JWT signed by one of our keys, or names another issuer.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken("The id_token_hint is not a JWT.")
    header = _header(token)
    kid = header.get("kid")
    key = keys.verification_keys(kid).get(kid) if isinstance(kid, str) else None
    if header.get("alg") != keys.ALG or key is None:
        raise InvalidToken("The id_token_hint is not signed by this server.")
    try:
        claims = jwt.decode(token, key, algorithms=[keys.ALG]).claims
    except (JoseError, ValueError) as exc:
        raise InvalidToken("The id_token_hint signature is invalid.") from exc
    if claims.get("iss") != issuer():
        raise InvalidToken("The id_token_hint has the wrong issuer.")
    return claims
