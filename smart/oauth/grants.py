"""Authlib grants with SMART rules: PKCE S256 for everyone, aud check, launch context, JWT tokens."""
from __future__ import annotations

import secrets

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from sqlalchemy import delete, select, update

from smart import authz, scopes
from smart.store.db import get_session
from smart.store.models import (
    CODE_LIFETIME,
    AuthorizationCode,
    Client,
    IssuedAccessToken,
    LaunchContext,
    RefreshToken,
    User,
    digest,
    now,
)
from smart.tokens import jwt as tokens

#: Refresh token lifetimes in seconds (SMART 2.2 §Scopes: offline_access / online_access).
OFFLINE_REFRESH_LIFETIME = 90 * 24 * 3600
ONLINE_REFRESH_LIFETIME = 12 * 3600
#: Seconds a used or expired code row is kept after expiry, to recognise replays.
CODE_RETENTION = 24 * 3600

#: Token endpoint client authentication methods we accept (SMART 2.2 §Client Authentication).
TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class S256CodeChallenge(CodeChallenge):
    """PKCE (RFC 7636) restricted to S256 and required for every client.

    Authlib's default accepts ``plain`` and only requires a challenge from public
    clients; SMART 2.2 §Authorization Code requires S256 from all apps.
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'.")
        super().validate_code_verifier(grant, result)


def scope_has(scope: str | None, name: str) -> bool:
    """True if the space-separated *scope* contains *name*."""
    return name in (scope or "").split()


def end_user_scope(scope: str | None, user: User) -> str:
    """What *user*'s authorization may carry of *scope*: never ``system/``, and ``user/`` for a
    patient user only when their token names them (:func:`smart.scopes.for_end_user`)."""
    return scopes.for_end_user(scope, user.role, user.fhir_user)


def find_launch(launch_id: str | None) -> LaunchContext | None:
    """Return the unused, unexpired launch context *launch_id*, or None."""
    if not launch_id:
        return None
    row = get_session().get(LaunchContext, launch_id)
    if row is None or row.used_at is not None or row.expires_at <= now():
        return None
    return row


def launch_refusal(launch: LaunchContext, user: User) -> str | None:
    """Why the EHR launch *launch* cannot apply to *user*, or None when it can.

    A launch bound to a user is for that user only; a patient user only ever works on their
    own record, so a launch for another patient cannot be theirs (SMART 2.2 §EHR launch); a
    practitioner works only on the patients of their access list, whoever made the launch.
    """
    if launch.username and launch.username != user.username:
        return "This launch was created for another user."
    if user.role == "patient" and launch.patient and launch.patient != user.patient:
        return "This launch is for another patient's record."
    if user.role != "patient" and launch.patient and not authz.practitioner_may_see(user.username, launch.patient):
        return "You have no access to this patient's records."
    return None


def context_patient(launch: LaunchContext | None, user: User, selected: str | None = None) -> str | None:
    """The Patient id the token will carry: a patient user's own record, else the launch's
    patient, else the one the practitioner chose (standalone ``launch/patient``)."""
    if user.role == "patient":
        return user.patient
    if launch is not None:
        return launch.patient
    return selected


class _SmartTokenMixin:
    """Builds the SMART token response (RFC 6749 §5.1 plus SMART 2.2 launch context fields)."""

    ACCESS_TOKEN_LIFETIME = tokens.ACCESS_TOKEN_LIFETIME

    def _context(self) -> dict:
        raise NotImplementedError

    def _refresh_allowed(self, scope: str) -> bool:
        return scope_has(scope, "offline_access") or scope_has(scope, "online_access")

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None, include_refresh_token=True):
        client = self.request.client
        context = self._context()
        scope = scope or ""
        if user is not None:
            # Also covers refresh tokens stored before system/ was refused to end users.
            scope = end_user_scope(scope, user)
        access_token, claims = tokens.issue_access_token(
            client.client_id,
            sub=user.username if user else client.client_id,
            scope=scope,
            context=context,
            # Every access token of a user names the user (an access token claim, not the
            # id_token's): authz bounds a patient user's user/ scopes by it.
            fhir_user=user.fhir_user if user is not None else None,
            lifetime=self.ACCESS_TOKEN_LIFETIME,
        )
        self.request.access_claims = claims
        token = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.ACCESS_TOKEN_LIFETIME,
            "scope": scope,
        }
        # SMART 2.2 §Launch context arrives with your access_token: top-level fields.
        for name in ("patient", "encounter", "need_patient_banner", "smart_style_url"):
            if context.get(name) not in (None, ""):
                token[name] = context[name]
        if include_refresh_token and self._refresh_allowed(self._refresh_scope(scope)):
            token["refresh_token"] = secrets.token_urlsafe(36)
        if user is not None and scope_has(scope, "openid"):
            token["id_token"] = tokens.issue_id_token(
                client.client_id,
                sub=user.username,
                nonce=self._nonce(),
                fhir_user=context.get("fhirUser") if scope_has(scope, "fhirUser") else None,
                auth_time=self._auth_time(),
            )
        return token

    def _refresh_scope(self, scope: str) -> str:
        return scope

    def _nonce(self) -> str | None:
        return None

    def _auth_time(self) -> int | None:
        return None


class AuthorizationCodeGrant(_SmartTokenMixin, grants.AuthorizationCodeGrant):
    """Authorization code grant (RFC 6749 §4.1) for SMART App Launch 2.2."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        """Exact match against the registered URIs; never echo the URI in the error
        (RFC 6749 §3.1.2.4: show the error, do not redirect)."""
        redirect_uri = request.payload.redirect_uri
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        if not client.check_redirect_uri(redirect_uri):
            raise InvalidRequestError("The 'redirect_uri' is not registered for this client.")
        return redirect_uri

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        try:
            self._validate_smart_request()
        except OAuth2Error as error:
            error.redirect_uri = redirect_uri
            raise
        return redirect_uri

    def _validate_smart_request(self) -> None:
        data = self.request.payload.data
        # SMART 2.2 §Obtain authorization code: aud must name this FHIR server, or the
        # request is refused so the app cannot leak a token to a counterfeit server. An
        # OpenID Connect client (OIDC Core 1.0 §3.1.2.1, e.g. a browser viewer) sends no aud:
        # its token is bound to this server's FHIR base, the only audience we issue for. An
        # empty aud counts as none (RFC 6749 §3.1: parameters without a value are omitted).
        aud = (data.get("aud") or "").rstrip("/")
        if aud and aud != tokens.fhir_base():
            raise InvalidRequestError("'aud' must be the FHIR base URL of this server.")
        launch_id = data.get("launch")
        if launch_id and find_launch(launch_id) is None:
            raise InvalidRequestError("Unknown, used or expired 'launch'.")

    def save_authorization_code(self, code, request):
        """Store the code (hashed) with PKCE, nonce, aud and launch context; consume the launch."""
        user: User = request.user
        data = request.payload.data
        granted = getattr(request, "granted_scope", None)
        scope = end_user_scope(granted if granted is not None else request.scope, user)
        context: dict = {}
        launch = find_launch(data.get("launch")) if scope_has(scope, "launch") else None
        if launch is not None:
            refusal = launch_refusal(launch, user)
            if refusal:
                # redirect_uri was validated by validate_authorization_request just before.
                raise AccessDeniedError(refusal, redirect_uri=data.get("redirect_uri"), state=data.get("state"))
            launch.used_at = now()
            context.update(
                patient=launch.patient,
                encounter=launch.encounter if scope_has(scope, "launch/encounter") or launch.encounter else None,
                need_patient_banner=launch.need_patient_banner,
                smart_style_url=launch.smart_style_url or getattr(request, "smart_style_url", None),
            )
        elif scope_has(scope, "launch/patient"):
            context.update(
                patient=context_patient(None, user, getattr(request, "selected_patient", None)),
                need_patient_banner=True,
                smart_style_url=getattr(request, "smart_style_url", None),
            )
        if user.role == "patient":
            # A patient user only ever sees their own record, whatever the launch.
            context["patient"] = user.patient
        if user.fhir_user:
            context["fhirUser"] = user.fhir_user
        context = {k: v for k, v in context.items() if v is not None}
        session = get_session()
        # Spent and expired codes are only kept long enough to detect a replay.
        session.execute(delete(AuthorizationCode).where(AuthorizationCode.expires_at < now() - CODE_RETENTION))
        session.add(AuthorizationCode(
            code_hash=digest(code),
            client_id=request.client.client_id,
            user_id=user.id,
            redirect_uri=data.get("redirect_uri"),
            scope=scope,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            aud=data.get("aud") or tokens.fhir_base(),
            context=context,
            auth_time=getattr(request, "auth_time", None) or now(),
            expires_at=now() + CODE_LIFETIME,
        ))
        session.commit()

    def query_authorization_code(self, code, client):
        """Find and atomically consume *code* (single use, RFC 6749 §4.1.2).

        A replayed code is refused and every token issued from it is revoked
        (RFC 6749 §4.1.2, RFC 9700 §4.5).
        """
        session = get_session()
        row = session.scalars(
            select(AuthorizationCode).where(AuthorizationCode.code_hash == digest(code))
        ).first()
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            revoke_code_family(row)
            return None
        if row.is_expired():
            return None
        consumed = session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == row.id, AuthorizationCode.used_at.is_(None))
            .values(used_at=now())
        )
        session.commit()
        if consumed.rowcount != 1:
            return None
        return row

    def delete_authorization_code(self, authorization_code):
        # Kept (marked used) so a replay can be detected; purged after expiry.
        pass

    def authenticate_user(self, authorization_code):
        return get_session().get(User, authorization_code.user_id)

    def _context(self) -> dict:
        return dict(self.request.authorization_code.context or {})

    def _nonce(self):
        return self.request.authorization_code.nonce

    def _auth_time(self):
        return self.request.authorization_code.auth_time


def revoke_code_family(code: AuthorizationCode) -> None:
    """Revoke the access token and refresh tokens issued from a replayed code."""
    if code.access_jti:
        tokens.revoke_jti(code.access_jti, code.auth_time + tokens.ACCESS_TOKEN_LIFETIME + 3600)
    revoke_family(code.id)


def revoke_family(code_id: int | None) -> None:
    """Revoke every refresh token and access token issued from the grant that started with
    authorization code *code_id* (RFC 9700 §4.14.2 refresh token rotation: a replayed
    refresh token means one of two parties holds a stolen copy, so neither keeps access).
    """
    if code_id is None:
        return
    session = get_session()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.code_id == code_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    session.commit()
    issued = session.execute(
        select(IssuedAccessToken.jti, IssuedAccessToken.exp)
        .where(IssuedAccessToken.code_id == code_id, IssuedAccessToken.exp > now())
    ).all()
    for jti, exp in issued:
        tokens.revoke_jti(jti, exp)


class RefreshTokenGrant(_SmartTokenMixin, grants.RefreshTokenGrant):
    """Refresh token grant (RFC 6749 §6) that rotates the refresh token and repeats the
    launch context (SMART 2.2 §Refresh access token)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_token_endpoint_client(self):
        form = self.request.form
        has_credentials = (
            "Authorization" in self.request.headers
            or form.get("client_id")
            or form.get("client_assertion")
        )
        if not has_credentials:
            # SMART 2.2 lists no client_id in a public client's refresh request: take it
            # from the refresh token itself, but only for public clients.
            row = self._find(form.get("refresh_token"))
            if row is None:
                raise InvalidGrantError("Unknown 'refresh_token'.")
            client = get_session().scalars(select(Client).where(Client.client_id == row.client_id)).first()
            if client is None or not client.is_public:
                raise InvalidClientError(description="Client authentication is required.")
            self.request.auth_method = "none"
            return client
        return super().authenticate_token_endpoint_client()

    @staticmethod
    def _find(refresh_token: str | None) -> RefreshToken | None:
        if not refresh_token:
            return None
        return get_session().scalars(
            select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token))
        ).first()

    def authenticate_refresh_token(self, refresh_token):
        row = self._find(refresh_token)
        if row is None or row.is_expired():
            return None
        if row.is_revoked():
            # A spent (rotated) or revoked refresh token presented again: a replay.
            # Revoke the whole grant (RFC 9700 §4.14.2); Authlib answers invalid_grant.
            revoke_family(row.code_id)
            return None
        return row

    def authenticate_user(self, refresh_token):
        if refresh_token.user_id is None:
            return None
        return get_session().get(User, refresh_token.user_id)

    def revoke_old_credential(self, refresh_token):
        # Spend the old refresh token atomically: of two requests racing with the same token,
        # only one may rotate it. The loser is a replay, and the grant is revoked (RFC 9700
        # §4.14.2), including what the winner was just issued.
        session = get_session()
        spent = session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == refresh_token.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now())
        )
        session.commit()
        if spent.rowcount != 1:
            revoke_family(refresh_token.code_id)
            raise InvalidGrantError("The refresh token was already used.")

    def _context(self) -> dict:
        return dict(self.request.refresh_token.context or {})

    def _refresh_scope(self, scope: str) -> str:
        # RFC 6749 §6: a new refresh token keeps the scope of the one it replaces.
        return self.request.refresh_token.scope


class ClientCredentialsGrant(_SmartTokenMixin, grants.ClientCredentialsGrant):
    """SMART Backend Services (SMART 2.2 §Backend Services): ``client_credentials`` with
    ``private_key_jwt``, ``system/`` scopes only, five-minute tokens, no refresh token."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]
    ACCESS_TOKEN_LIFETIME = tokens.BACKEND_TOKEN_LIFETIME

    def authenticate_token_endpoint_client(self):
        """Authenticate any confidential client, then refuse those that may not use this grant.

        RFC 6749 §5.2: bad credentials are ``invalid_client``; a client that authenticated
        correctly (with a secret) but is not a Backend Services client is ``unauthorized_client``.
        """
        methods = ["private_key_jwt", "client_secret_basic", "client_secret_post"]
        client = self.server.authenticate_client(self.request, methods)
        self.server.send_signal("after_authenticate_client", client=client, grant=self)
        if self.request.auth_method not in self.TOKEN_ENDPOINT_AUTH_METHODS:
            raise UnauthorizedClientError(
                "client_credentials is for Backend Services clients, which authenticate with "
                "private_key_jwt (SMART 2.2 Backend Services)."
            )
        return client

    def create_token_response(self):
        client = self.request.client
        allowed = client.get_allowed_scope(self.request.payload.scope)
        # system/ scopes, plus "launch" for EHR back ends that create launch contexts
        # (POST /auth/launch).
        scope = " ".join(s for s in allowed.split() if s.startswith("system/") or s == "launch")
        if not scope:
            raise InvalidScopeError("Request at least one system/ scope the client is registered for.")
        token = self.generate_token(scope=scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def _context(self) -> dict:
        return {}
