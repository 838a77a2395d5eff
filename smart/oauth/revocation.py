"""Token introspection (RFC 7662) and revocation (RFC 7009) of access and refresh tokens."""
from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import jsonify, request

from smart import audit, authz
from smart.oauth.grants import RefreshTokenGrant
from smart.oauth.server import server
from smart.store.db import get_session
from smart.store.models import User, now
from smart.tokens import jwt as tokens

#: Client authentication accepted at these endpoints.
CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post"]
ANY_METHODS = ["client_secret_basic", "client_secret_post", "none"]

INACTIVE = {"active": False}


def _json(payload: dict, status: int = 200):
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _bearer() -> str | None:
    """The request's Bearer token (:func:`smart.authz.bearer_token`), or ``None`` without one."""
    try:
        return authz.bearer_token()
    except authz.Unauthorized:
        return None


def _token_param() -> str:
    value = request.form.get("token")
    if not value:
        raise InvalidRequestError("Missing 'token'.")
    return value


def _refresh_row(value: str):
    row = RefreshTokenGrant._find(value)
    if row is None or row.is_revoked() or row.is_expired():
        return None
    return row


def describe(value: str) -> dict:
    """Introspection answer for *value* (SMART 2.2 §Token Introspection response shape).

    Returns exactly ``{"active": false}`` for anything unknown, expired or revoked.
    """
    claims = tokens.verify_unexpired(value) if value.count(".") == 2 else None
    if claims is not None:
        answer = {"active": True, "token_type": "Bearer"}
        answer.update(claims)
        return answer
    row = _refresh_row(value)
    if row is None:
        return dict(INACTIVE)
    answer = {"active": True, "token_type": "refresh_token", "scope": row.scope, "client_id": row.client_id,
              "iat": row.issued_at, "iss": tokens.issuer()}
    if row.expires_at is not None:
        answer["exp"] = row.expires_at
    user = get_session().get(User, row.user_id) if row.user_id is not None else None
    if user is not None:
        answer["sub"] = user.username
    for name in ("patient", "encounter", "fhirUser"):
        if row.context.get(name):
            answer[name] = row.context[name]
    return answer


def _caller_client_id() -> str:
    """The client_id of the introspection caller: that of its active Bearer access token, or
    the confidential client that authenticated (Basic or post) (SMART 2.2 allows either).

    Raises
    ------
    OAuth2Error
        ``invalid_client`` when neither authenticates the caller.
    """
    bearer = _bearer()
    claims = tokens.verify_unexpired(bearer) if bearer is not None else None
    if claims is not None:
        return str(claims.get("client_id") or "")
    oauth_request = server.create_oauth2_request(None)
    client = server.authenticate_client(oauth_request, CONFIDENTIAL_METHODS, endpoint="introspection")
    return client.client_id


def introspect():
    """Handle ``POST /auth/introspect``.

    A caller learns only about tokens issued to its own client_id; any other token is
    answered ``{"active": false}``, exactly like an unknown one (RFC 7662 §2.2, and §4: the
    server decides which protected resources may introspect which tokens), so one app's
    token cannot read another's patient context.
    """
    try:
        caller = _caller_client_id()
        answer = describe(_token_param())
    except OAuth2Error as error:
        return server.handle_error_response(None, error)
    if answer.get("active") and answer.get("client_id") != caller:
        answer = dict(INACTIVE)
    return _json(answer)


def revoke():
    """Handle ``POST /auth/revoke`` (RFC 7009 §2): the client revokes one of its own tokens.

    Answers 200 whether or not the token was known (RFC 7009 §2.2).
    """
    try:
        oauth_request = server.create_oauth2_request(None)
        client = server.authenticate_client(oauth_request, ANY_METHODS, endpoint="revocation")
        value = _token_param()
    except OAuth2Error as error:
        return server.handle_error_response(None, error)
    claims = tokens.verify_unexpired(value) if value.count(".") == 2 else None
    if claims is not None:
        if claims.get("client_id") == client.client_id:
            tokens.revoke_jti(claims["jti"], claims["exp"])
            audit.record("token-revoked", client_id=client.client_id, jti=claims.get("jti"),
                         who=claims.get("fhirUser"), patient=claims.get("patient"), address=request.remote_addr,
                         description="access token revoked")
        return _json({})
    row = _refresh_row(value)
    if row is not None and row.client_id == client.client_id:
        row.revoked_at = now()
        get_session().commit()
        audit.record("token-revoked", client_id=client.client_id, patient=(row.context or {}).get("patient"),
                     who=(row.context or {}).get("fhirUser"), address=request.remote_addr,
                     description="refresh token revoked")
    return _json({})

