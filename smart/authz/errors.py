"""The errors of the access policy, each with its HTTP status and RFC 6750 §3 error code.

Every route renders them through one handler per blueprint; :class:`Unavailable` answers 503
with ``Retry-After`` instead of a challenge.
"""
from __future__ import annotations


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


class Unavailable(AuthorizationError):
    """The EHR that issued the token could not vouch for it in time (503 with ``Retry-After``,
    RFC 9110 §15.6.4): never an acceptance by default, never a 500."""

    status = 503
    error = "temporarily_unavailable"  # RFC 6749 §4.1.2.1, for the OAuth-shaped answers
    default_description = "the token's issuer is unavailable; try again later"

    def __init__(self, description: str | None = None, *, retry_after: int = 5):
        super().__init__(description)
        self.retry_after = retry_after

    def headers(self, realm: str) -> dict[str, str]:
        """``Retry-After`` (RFC 9110 §10.2.3); no challenge: the token was not refused."""
        return {"Retry-After": str(self.retry_after)}


class Forbidden(AuthorizationError):
    """A valid token whose scopes or patient context do not cover the request (403)."""

    status = 403
    error = "insufficient_scope"
    default_description = "the access token does not allow this request"
