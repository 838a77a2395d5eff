"""``private_key_jwt`` client authentication (RFC 7523 §2.2, SMART 2.2 §Client Authentication: Asymmetric)."""
from __future__ import annotations

import base64
import json
import threading
import time

import requests
from authlib.oauth2.rfc6749.errors import InvalidClientError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from smart.oauth.urls import TOKEN_PATH
from smart.store.db import get_session
from smart.store.models import UsedAssertion, now
from smart.tokens import jwt as tokens

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

#: Signature algorithms SMART Backend Services requires servers to accept. joserfc refuses
#: them as "not recommended" unless they are listed explicitly on decode.
ALGORITHMS = ["RS384", "ES384"]

#: Longest accepted assertion lifetime from now (SMART 2.2 §Backend Services: exp ≤ 5 min).
MAX_ASSERTION_LIFETIME = 300
#: Clock skew tolerated on exp, seconds.
LEEWAY = 30
#: Seconds ``iat`` and ``nbf`` may lie in the future (the client's clock running ahead).
FUTURE_SKEW = 60

#: Seconds a fetched jwks_uri document is reused.
JWKS_URI_CACHE_SECONDS = 300
_jwks_cache: dict[str, tuple[float, dict]] = {}
_jwks_lock = threading.Lock()


def _refuse(description: str) -> InvalidClientError:
    return InvalidClientError(status_code=401, description=description)


def _fetch_jwks(uri: str) -> dict:
    with _jwks_lock:
        hit = _jwks_cache.get(uri)
        if hit and time.monotonic() - hit[0] < JWKS_URI_CACHE_SECONDS:
            return hit[1]
    try:
        response = requests.get(uri, timeout=(3, 5), headers={"Accept": "application/json"})
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise _refuse("The client's jwks_uri could not be read.") from exc
    with _jwks_lock:
        _jwks_cache[uri] = (time.monotonic(), data)
    return data


def client_key_set(client) -> KeySet:
    """Public keys registered for *client*: its JWK Set, else the one at its jwks_uri."""
    data = client.jwks or (_fetch_jwks(client.jwks_uri) if client.jwks_uri else None)
    if not data or not isinstance(data, dict):
        raise _refuse("The client has no registered public keys.")
    try:
        return KeySet.import_key_set({"keys": [k for k in data.get("keys", []) if k.get("kty") in ("RSA", "EC")]})
    except (JoseError, ValueError, TypeError, KeyError, AttributeError) as exc:  # KeyError: an unknown crv
        raise _refuse("The client's registered keys are unusable.") from exc


def _unverified_claims(assertion: str) -> dict:
    try:
        segment = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _refuse("The client_assertion is not a JWT.") from exc
    if not isinstance(claims, dict):
        raise _refuse("The client_assertion is not a JWT.")
    return claims


def authenticate_private_key_jwt(query_client, request):
    """Authlib client-auth method ``private_key_jwt`` (register with the server).

    Checks (RFC 7523 §3, SMART 2.2 §Authenticating with a JWT): assertion type;
    ``iss`` == ``sub`` == a registered client; signature RS384/ES384 by one of the
    client's keys; ``aud`` is our token URL; ``exp`` in the future and at most five
    minutes ahead; ``nbf`` and ``iat``, when present, not in the future (beyond
    :data:`FUTURE_SKEW`); ``jti`` never seen before for this client. ``iat`` is not required.

    Returns
    -------
    Client or None
        None when the request carries no assertion (another method may apply).

    Raises
    ------
    InvalidClientError
        For any failed check.
    """
    form = request.form
    assertion = form.get("client_assertion")
    if form.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
        return None
    unverified = _unverified_claims(assertion)
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise _refuse("The client_assertion must have iss and sub equal to the client_id.")
    if form.get("client_id") and form.get("client_id") != client_id:
        raise _refuse("client_id does not match the client_assertion.")
    client = query_client(client_id)
    if client is None or client.token_endpoint_auth_method != "private_key_jwt":
        raise _refuse("Unknown client or the client does not use private_key_jwt.")
    try:
        claims = jwt.decode(assertion, client_key_set(client), algorithms=ALGORITHMS).claims
    except (JoseError, ValueError, RecursionError) as exc:
        raise _refuse("The client_assertion signature is invalid or uses a refused algorithm.") from exc
    token_url = tokens.issuer() + TOKEN_PATH
    aud = claims.get("aud")
    if aud != token_url and not (isinstance(aud, list) and token_url in aud):
        raise _refuse("The client_assertion aud must be the token endpoint URL.")
    exp, jti, current = claims.get("exp"), claims.get("jti"), now()
    if not isinstance(exp, int) or exp + LEEWAY <= current:
        raise _refuse("The client_assertion has expired or lacks exp.")
    if exp > current + MAX_ASSERTION_LIFETIME + LEEWAY:
        raise _refuse("The client_assertion exp is more than five minutes ahead.")
    # RFC 7519 §4.1.5-6, RFC 7523 §3 items 5-6: a JWT not valid yet, or issued in the future
    # beyond the skew, is refused (it could otherwise be minted now and used for hours).
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _refuse(f"The client_assertion {name} is not a number.")
        if value > current + FUTURE_SKEW:
            raise _refuse(f"The client_assertion {name} is in the future.")
    if not isinstance(jti, str) or not jti:
        raise _refuse("The client_assertion lacks jti.")
    session = get_session()
    session.execute(delete(UsedAssertion).where(UsedAssertion.exp < current - LEEWAY))
    session.add(UsedAssertion(client_id=client_id, jti=jti[:256], exp=exp))
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise _refuse("The client_assertion jti was already used.") from exc
    return client
