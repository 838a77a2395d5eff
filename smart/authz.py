"""The one authorization decision of the facade: may this access token see this patient's data?

Both the FHIR API and the DICOMweb proxy call :func:`require` and :func:`check_patient`;
nothing else decides. Token validation is :func:`smart.tokens.decode_access_token`; scope
grammar is :mod:`smart.scopes` (SMART App Launch 2.2 §Scopes and Launch Context).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from flask import g, request

from . import scopes as scope_grammar
from . import tokens

#: ``scopes.permits`` memoised: every proxied request asks the same few questions of the
#: same few scope strings, and parsing them each time is most of the decision's cost.
_permits = functools.lru_cache(maxsize=4096)(scope_grammar.permits)

#: Contexts from most to least restricted (SMART App Launch 2.2 §Scopes).
_CONTEXTS = ("system", "user", "patient")


class AuthorizationError(Exception):
    """The request may not proceed; ``status`` and ``error`` follow RFC 6750 §3.1."""

    status = 401
    error: str | None = "invalid_token"
    default_description = "the access token is not valid"

    def __init__(self, description: str | None = None, *, error: str | None = None):
        super().__init__(description or self.default_description)
        self.description = description or self.default_description
        if error is not None:
            self.error = error

    def headers(self, realm: str) -> dict[str, str]:
        """Response headers for this error: the challenge, on 401 and 403 alike (RFC 6750 §3)."""
        return {"WWW-Authenticate": self.www_authenticate(realm)}

    def www_authenticate(self, realm: str) -> str:
        """The ``WWW-Authenticate`` header value for this error (RFC 6750 §3)."""
        value = f'Bearer realm="{realm}"'
        if self.error:
            value += f', error="{self.error}", error_description="{self.description}"'
        return value


class Unauthorized(AuthorizationError):
    """No token, or a token that is malformed, expired, revoked or not ours (401)."""


class Forbidden(AuthorizationError):
    """A valid token whose scopes or patient context do not cover the request (403)."""

    status = 403
    error = "insufficient_scope"
    default_description = "the access token does not allow this request"


@dataclass(frozen=True)
class AccessGrant:
    """What a verified access token allows.

    Attributes
    ----------
    claims : dict
        The token's verified claims.
    scope : str
        Granted scopes, space separated.
    patient : str or None
        FHIR Patient id of the launch context.
    client_id : str or None
        The client the token was issued to.
    """

    claims: dict
    scope: str
    patient: str | None
    client_id: str | None

    def context_for(self, resource_type: str, interaction: str) -> str | None:
        """The least restricted context (system, user, patient) whose scopes allow the interaction."""
        for context in _CONTEXTS:
            if _permits(self.scope, resource_type, interaction, contexts=(context,)):
                return context
        return None

    def compartment(self, resource_type: str, interaction: str = "r") -> str | None:
        """The only Patient id this grant may see for *resource_type*, or ``None`` for any.

        Raises
        ------
        Forbidden
            If no scope covers the interaction, or a patient-level scope has no patient context.
        """
        context = self.context_for(resource_type, interaction)
        if context is None:
            raise Forbidden(f"no granted scope allows {resource_type} {interaction}")
        if context == "system":
            return None
        fhir_user = str(self.claims.get("fhirUser") or "")
        if context == "user":
            # A user-level grant to a patient user still only reaches that patient.
            marker = "Patient/"
            return fhir_user[fhir_user.index(marker) + len(marker):] if marker in fhir_user else None
        if not self.patient:
            raise Forbidden("patient-level scope without a patient in context")
        return self.patient


def bearer_token() -> str:
    """Return the Bearer token of the current request (RFC 6750 §2.1).

    Raises
    ------
    Unauthorized
        Without an Authorization header (no error code, RFC 6750 §3.1) or with a
        header that is not a Bearer token (``invalid_request``).
    """
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthorized("an access token is required", error="")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", error="invalid_request")
    return token


def current_grant() -> AccessGrant:
    """Verify the current request's access token once and return its grant.

    Raises
    ------
    Unauthorized
        No token, or an invalid, expired or revoked token.
    """
    grant = g.get("_access_grant")
    if grant is not None:
        return grant
    try:
        claims = tokens.decode_access_token(bearer_token())
    except tokens.InvalidToken as exc:
        raise Unauthorized(exc.description) from exc
    grant = AccessGrant(claims=claims, scope=str(claims.get("scope") or ""),
                        patient=claims.get("patient"), client_id=claims.get("client_id"))
    g._access_grant = grant
    return grant


def require(resource_type: str, interaction: str = "r") -> AccessGrant:
    """Check the current request's token allows *interaction* on *resource_type*.

    Parameters
    ----------
    resource_type : str
        FHIR resource type; the DICOMweb proxy asks for ``ImagingStudy``.
    interaction : str
        One SMART v2 letter: ``c``, ``r``, ``u``, ``d`` or ``s``.

    Returns
    -------
    AccessGrant

    Raises
    ------
    Unauthorized, Forbidden
    """
    grant = current_grant()
    grant.compartment(resource_type, interaction)
    return grant


def check_patient(grant: AccessGrant, resource_type: str, patient_id: str, interaction: str = "r") -> None:
    """Refuse unless *grant* may see *resource_type* data of Patient *patient_id*.

    Raises
    ------
    Forbidden
        If the grant is limited to another patient.
    """
    allowed = grant.compartment(resource_type, interaction)
    if allowed is not None and allowed != patient_id:
        raise Forbidden("the access token is not for this patient")
