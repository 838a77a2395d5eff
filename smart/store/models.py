"""SQLAlchemy tables of the authorization server: clients, users, codes, refresh tokens, keys, revocations."""
from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.ext.associationproxy import association_proxy
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from smart import scopes
from smart.store.columns import BigRowId, EpochSeconds
from smart.store.db import Base

#: Client authentication methods at the token endpoint (RFC 7591 §2, SMART 2.2 §Client Authentication).
PUBLIC_AUTH_METHODS = ("none",)
SYMMETRIC_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
ASYMMETRIC_AUTH_METHODS = ("private_key_jwt",)

#: Authorization code lifetime in seconds (issue 4: codes are single-use and live at most 60 s).
CODE_LIFETIME = 60


def now() -> int:
    """Current time in whole seconds since the epoch (all timestamps in these tables, 64-bit:
    :data:`smart.store.columns.EpochSeconds`)."""
    return int(time.time())


def digest(secret: str) -> str:
    """SHA-256 hex digest used to store high-entropy bearer secrets (codes, refresh tokens).

    They are random 48-character strings, so a fast hash is enough to make a stolen
    database useless for replay; user-chosen secrets use :func:`hash_secret` instead.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hash_secret(secret: str) -> str:
    """Slow salted hash (werkzeug scrypt) for passwords and client secrets."""
    return generate_password_hash(secret)


class Client(Base, ClientMixin):
    """A registered OAuth 2.0 client (RFC 6749 §2): public, symmetric or asymmetric."""

    __tablename__ = "smart_client"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(256))
    client_name: Mapped[str | None] = mapped_column(String(256))
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    #: Space-separated scopes the client may be granted; None means any valid SMART scope.
    scope: Mapped[str | None] = mapped_column(Text)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(64), default="none")
    grant_types: Mapped[list] = mapped_column(JSON, default=list)
    #: Public keys for private_key_jwt (a JWK Set) or where to fetch them.
    jwks: Mapped[dict | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    #: Rows of :attr:`post_logout_redirect_uris` (a table of their own: ``init-db`` adds it to an
    #: existing database, where a new column would need a migration).
    post_logout_rows: Mapped[list[PostLogoutRedirectURI]] = relationship(
        cascade="all, delete-orphan", order_by="PostLogoutRedirectURI.id")
    #: Where RP-Initiated Logout 1.0 §3 may send the browser after sign-out (exact strings).
    post_logout_redirect_uris = association_proxy(
        "post_logout_rows", "uri", creator=lambda uri: PostLogoutRedirectURI(uri=uri))

    @property
    def is_public(self) -> bool:
        """True for clients that hold no credential (``token_endpoint_auth_method`` ``none``)."""
        return self.token_endpoint_auth_method in PUBLIC_AUTH_METHODS

    @property
    def origins(self) -> set[str]:
        """Web origins (``scheme://host[:port]``) of the http(s) redirect URIs, for CORS."""
        found = set()
        for uri in self.redirect_uris or []:
            parts = urlsplit(uri)
            if parts.scheme in ("http", "https") and parts.netloc:
                found.add(f"{parts.scheme}://{parts.netloc}".lower())
        return found

    def set_secret(self, secret: str | None) -> None:
        """Store *secret* hashed (never in clear); None makes the client public-only."""
        self.client_secret_hash = hash_secret(secret) if secret else None

    # --- authlib ClientMixin -------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        # SMART App Launch 2.2 §Obtain authorization code: redirect_uri is REQUIRED,
        # so never fall back to a registered default.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scopes.granted(scope, self.scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3): no prefix,
        # no trailing-slash or case normalisation.
        return redirect_uri in (self.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.client_secret_hash or not client_secret:
            return False
        return check_password_hash(self.client_secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.token_endpoint_auth_method in SYMMETRIC_AUTH_METHODS:
            return method in SYMMETRIC_AUTH_METHODS
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.grant_types or [])


class PostLogoutRedirectURI(Base):
    """One ``post_logout_redirect_uri`` registered for a client (RP-Initiated Logout 1.0 §3)."""

    __tablename__ = "smart_post_logout_redirect_uri"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("smart_client.client_id"), index=True)
    uri: Mapped[str] = mapped_column(Text)


class User(Base):
    """A built-in end user who can log in on the authorization page."""

    __tablename__ = "smart_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    #: FHIR Patient id of a patient user (their own record).
    patient: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32), default="patient")
    #: Relative FHIR reference of the user (``Patient/x``, ``Practitioner/y``); derived if None.
    fhir_user_reference: Mapped[str | None] = mapped_column(String(256))

    def set_password(self, password: str) -> None:
        self.password_hash = hash_secret(password)

    def check_password(self, password: str) -> bool:
        return bool(password) and check_password_hash(self.password_hash, password)

    def get_user_id(self) -> int:
        return self.id

    @property
    def fhir_user(self) -> str | None:
        """``fhirUser`` reference (SMART 2.2 §Scopes for requesting identity data): the stored
        one, else ``Patient/<patient>`` for a patient user and ``Practitioner/<id>`` for a
        practitioner, whose id is the username when it is a valid FHIR id, else a digest of it."""
        if self.fhir_user_reference:
            return self.fhir_user_reference
        if self.role == "patient":
            return f"Patient/{self.patient}" if self.patient else None
        name = self.username or ""
        valid = 0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "-.") for c in name)
        return f"Practitioner/{name if valid else 'u-' + digest(name)[:40]}"


class AuthorizationCode(Base, AuthorizationCodeMixin):
    """An issued authorization code, stored by hash, with everything the token request needs."""

    __tablename__ = "smart_authorization_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("smart_user.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text, default="")
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    aud: Mapped[str | None] = mapped_column(Text)
    #: Launch context (SMART 2.2 §Launch context arrives with your access_token).
    context: Mapped[dict] = mapped_column(JSON, default=dict)
    auth_time: Mapped[int] = mapped_column(EpochSeconds, default=now)
    expires_at: Mapped[int] = mapped_column(EpochSeconds)
    used_at: Mapped[int | None] = mapped_column(EpochSeconds)
    #: jti of the access token issued from this code, revoked if the code is replayed.
    access_jti: Mapped[str | None] = mapped_column(String(64))

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class RefreshToken(Base, TokenMixin):
    """A refresh token (RFC 6749 §6), stored by hash, bound to its client and launch context."""

    __tablename__ = "smart_refresh_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("smart_user.id"))
    scope: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict] = mapped_column(JSON, default=dict)
    issued_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    expires_at: Mapped[int | None] = mapped_column(EpochSeconds)
    revoked_at: Mapped[int | None] = mapped_column(EpochSeconds)
    #: Authorization code the token family started from (replay of that code revokes it).
    code_id: Mapped[int | None] = mapped_column(Integer, index=True)

    def check_client(self, client) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 0 if self.expires_at is None else max(0, self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class IssuedAccessToken(Base):
    """An access token issued from an authorization grant (a code and its refresh tokens), by
    ``jti``, kept until its ``exp`` so the whole family can be revoked on a refresh token replay."""

    __tablename__ = "smart_issued_access_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Authorization code the grant started from (:attr:`RefreshToken.code_id`).
    code_id: Mapped[int] = mapped_column(Integer, index=True)
    exp: Mapped[int] = mapped_column(EpochSeconds, index=True)


class SigningKey(Base):
    """An RSA signing key (private JWK as JSON); retired keys still verify until tokens expire."""

    __tablename__ = "smart_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_jwk: Mapped[str] = mapped_column(Text)
    alg: Mapped[str] = mapped_column(String(16), default="RS256")
    created_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    retired_at: Mapped[int | None] = mapped_column(EpochSeconds)


class RevokedToken(Base):
    """A revoked JWT access token, by ``jti``, kept until its ``exp`` passes."""

    __tablename__ = "smart_revoked_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    exp: Mapped[int] = mapped_column(EpochSeconds, index=True)


class LaunchContext(Base):
    """An EHR launch context (SMART 2.2 §EHR launch): single use, short-lived."""

    __tablename__ = "smart_launch_context"

    launch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient: Mapped[str | None] = mapped_column(String(64))
    encounter: Mapped[str | None] = mapped_column(String(64))
    #: username of the user the EHR launched for (optional).
    username: Mapped[str | None] = mapped_column(String(128))
    #: False by default: the launching EHR shows the patient itself (a standalone launch says true).
    need_patient_banner: Mapped[bool] = mapped_column(Boolean, default=False)
    smart_style_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    expires_at: Mapped[int] = mapped_column(EpochSeconds)
    used_at: Mapped[int | None] = mapped_column(EpochSeconds)


class Setting(Base):
    """Server-generated settings that must survive restarts (e.g. the session SECRET_KEY)."""

    __tablename__ = "smart_setting"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UsedAssertion(Base):
    """A client assertion ``jti`` already presented (RFC 7523 §3 item 7), kept until its ``exp``."""

    __tablename__ = "smart_used_assertion"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    exp: Mapped[int] = mapped_column(EpochSeconds, index=True)


class LoginAttempt(Base):
    """A login attempt on the authorization page that did not succeed (yet), by username and
    client address; kept for :data:`smart.web.login.FAILURE_WINDOW` seconds to throttle guessing.
    In the database so that every worker counts the same attempts."""

    __tablename__ = "smart_login_attempt"

    #: 64-bit: every attempt takes an id, at the pace of whoever sends them (ids are not reused).
    id: Mapped[int] = mapped_column(BigRowId, primary_key=True)
    #: The username as typed, case-folded and cut to 128 characters (known or not).
    username: Mapped[str] = mapped_column(String(128), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[int] = mapped_column(EpochSeconds, index=True)


class PatientAlias(Base):
    """A PatientID behind a one-way Patient id (``dcm-h.``, DESIGN.md "Identifiers" rule 3).

    The one-way id cannot be turned back into the PatientID. The facade records the pair when
    it first sees that PatientID in a PACS answer, so that every worker, and the next run, can
    still ask the PACS for the patient of a token issued for that id.
    """

    __tablename__ = "facade_patient_alias"

    fhir_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(Text)


#: :attr:`PatientAccess.patient` of the row that gives access to every patient (no FHIR id
#: contains ``*``, FHIR R4 §2.24.0.1).
ALL_PATIENTS = "*"

#: :attr:`PatientAccess.kind` of a backend client's list (by ``client_id``) and a user's (by username).
ACCESS_CLIENT = "client"
ACCESS_USER = "user"


class PatientAccess(Base):
    """One entry of a backend client's or practitioner user's access list (SMART Imaging Access:
    ``system/`` and ``user/`` grants reach only pre-authorized patients).

    A subject without rows may see no patient; a row whose ``patient`` is
    :data:`ALL_PATIENTS` lets it see every patient.
    """

    __tablename__ = "smart_patient_access"

    #: :data:`ACCESS_CLIENT` or :data:`ACCESS_USER`.
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: The client id or the username.
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: A FHIR Patient id, or :data:`ALL_PATIENTS`.
    patient: Mapped[str] = mapped_column(String(64), primary_key=True)
    granted_at: Mapped[int] = mapped_column(EpochSeconds, default=now)


class TrustedIssuer(Base):
    """An EHR authorization server whose access tokens the facade accepts (issue 17; SMART
    Imaging Access: the EHR issues the token, the imaging server is its resource server).

    Managed with ``flask smart add-issuer`` / ``list-issuers`` / ``remove-issuer``; read by
    :mod:`smart.tokens.issuers`. The introspection credential is the facade's own at that EHR
    (a client secret for ``client_secret_basic``, or a private key for ``private_key_jwt``):
    it must be usable, so it is stored as given and never printed or logged.
    """

    __tablename__ = "smart_trusted_issuer"

    #: The ``iss`` of its tokens, exactly (RFC 8414 §2 ``issuer``).
    issuer: Mapped[str] = mapped_column(String(512), primary_key=True)
    #: ``Identifier.system`` of the EHR Patient's identifier that is the PACS's PatientID (an MRN).
    patient_identifier_system: Mapped[str] = mapped_column(Text)
    #: The EHR's FHIR base for ``Patient/{id}`` reads; None: the issuer URL.
    fhir_base: Mapped[str | None] = mapped_column(Text)
    #: The ``aud`` its tokens must name; None: the facade's FHIR base.
    audience: Mapped[str | None] = mapped_column(Text)
    #: The facade's client id at the EHR's introspection endpoint; None: no introspection.
    introspection_client_id: Mapped[str | None] = mapped_column(String(256))
    #: Client secret for ``client_secret_basic`` (stored as is: it is sent).
    introspection_secret: Mapped[str | None] = mapped_column(Text)
    #: PEM private key for ``private_key_jwt`` (RFC 7523 §2.2).
    introspection_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(EpochSeconds, default=now)


class Consent(Base):
    """Scopes a user approved for a client on the consent page, remembered so that the next
    authorization request of that client for the same scopes or fewer skips the page
    (issue 14; OIDC Core 1.0 §3.1.2.4 consent). Withdrawn on the user's apps page."""

    __tablename__ = "smart_consent"

    user_id: Mapped[int] = mapped_column(ForeignKey("smart_user.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Every scope approved so far, space separated, sorted.
    scope: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    updated_at: Mapped[int] = mapped_column(EpochSeconds, default=now)


class ShareLink(Base):
    """A link a patient made to show one study (or all their studies) to someone without an
    account (issue 15: instead of a CD). Managed with ``/auth/shares``; redeemed at
    ``/share/<secret>``; read by :mod:`smart.tokens.shares`.

    The link's secret (``secrets.token_urlsafe(32)``, 256 bits) is stored only as its SHA-256
    (:func:`digest`), like codes and refresh tokens; the optional PIN as a slow salted hash
    (:func:`hash_secret`), like passwords.
    """

    __tablename__ = "smart_share_link"

    #: Public id of the share (in ``GET /auth/shares`` and ``DELETE /auth/shares/{id}``); not a secret.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: SHA-256 hex digest of the link's secret.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: FHIR Patient id whose images the link shows.
    patient: Mapped[str] = mapped_column(String(64), index=True)
    #: StudyInstanceUID, or ``all`` for every study of the patient.
    study: Mapped[str] = mapped_column(String(64))
    #: Who made it (the token's ``sub`` or the logged-in username).
    created_by: Mapped[str] = mapped_column(String(256))
    pin_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(EpochSeconds, default=now)
    expires_at: Mapped[int] = mapped_column(EpochSeconds)
    revoked_at: Mapped[int | None] = mapped_column(EpochSeconds)
    last_used_at: Mapped[int | None] = mapped_column(EpochSeconds)
    uses: Mapped[int] = mapped_column(Integer, default=0)
