"""The Authlib AuthorizationServer of the facade, bound late to the Flask app."""
from __future__ import annotations

import logging

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Flask, current_app
from flask import request as flask_request
from sqlalchemy import delete, select

from smart import audit
from smart.oauth import assertions, grants
from smart.store.db import get_session
from smart.store.models import Client, IssuedAccessToken, RefreshToken, digest, now


def query_client(client_id: str | None) -> Client | None:
    """Return the registered client *client_id*, or None."""
    if not client_id:
        return None
    return get_session().scalars(select(Client).where(Client.client_id == client_id)).first()


def save_token(token: dict, request) -> None:
    """Persist what a token response created: the refresh token (hashed) with its launch
    context, and the access token's ``jti`` with the grant it came from, so that a replayed
    code or refresh token revokes the whole family (RFC 9700 §4.14.2).
    """
    session = get_session()
    code = request.authorization_code
    old = request.refresh_token
    if "refresh_token" in token:
        source = old if old is not None else code
        scope = source.scope
        if "offline_access" in scope.split():
            expires_at = now() + grants.OFFLINE_REFRESH_LIFETIME
        elif old is not None and old.expires_at is not None:
            expires_at = old.expires_at
        else:
            expires_at = now() + grants.ONLINE_REFRESH_LIFETIME
        session.add(RefreshToken(
            token_hash=digest(token["refresh_token"]),
            client_id=request.client.client_id,
            user_id=request.user.id if request.user is not None else None,
            scope=scope,
            context=dict(source.context or {}),
            issued_at=now(),
            expires_at=expires_at,
            code_id=old.code_id if old is not None else code.id,
        ))
    if code is not None:
        code.access_jti = request.access_claims["jti"]
    family = code.id if code is not None else old.code_id if old is not None else None
    if family is not None:
        claims = request.access_claims
        session.execute(delete(IssuedAccessToken).where(IssuedAccessToken.exp <= now()))
        session.add(IssuedAccessToken(jti=claims["jti"], code_id=family, exp=claims["exp"]))
    session.commit()
    _audit_issued(request, refreshed=old is not None)


def _audit_issued(request, refreshed: bool) -> None:
    """Record the token issued (or refreshed) by its ``jti``, client, user and patient (never the token)."""
    claims = getattr(request, "access_claims", None) or {}
    user = request.user
    audit.record("token-refreshed" if refreshed else "token-issued", client_id=request.client.client_id,
                 jti=claims.get("jti"), who=claims.get("fhirUser"),
                 user=user.username if user is not None and not claims.get("fhirUser") else None,
                 patient=claims.get("patient"), address=flask_request.remote_addr)


class SmartAuthorizationServer(AuthorizationServer):
    """Authlib's Flask server with the transport policy decided per app.

    ``FACADE_INSECURE_TRANSPORT`` "1" allows plain HTTP on loopback (Authlib 1.9 already
    treats ``http://localhost`` and loopback IPs as secure, RFC 8252 §7.3); any other value
    demands HTTPS. Nothing is written to ``os.environ``.
    """

    def create_oauth2_request(self, request):
        if current_app.config.get("FACADE_INSECURE_TRANSPORT") != "1" and flask_request.scheme != "https":
            raise InsecureTransportError()
        return FlaskOAuth2Request(flask_request)


# Authlib logs whole token responses (access and refresh tokens) at DEBUG level
# ("Issue token %r to %r"); keep its logger above DEBUG so no token reaches a log.
_authlib_log = logging.getLogger("authlib")
if _authlib_log.level < logging.INFO:
    _authlib_log.setLevel(logging.INFO)

server = SmartAuthorizationServer()
server.register_grant(grants.AuthorizationCodeGrant, [grants.S256CodeChallenge(required=True)])
server.register_grant(grants.RefreshTokenGrant)
server.register_grant(grants.ClientCredentialsGrant)
server.register_client_auth_method("private_key_jwt", assertions.authenticate_private_key_jwt)


def init_app(app: Flask) -> None:
    """Bind :data:`server` to *app* (configuration only; the grants are registered once)."""
    server.init_app(app, query_client=query_client, save_token=save_token)
