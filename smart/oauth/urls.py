"""Paths of the authorization server below FACADE_PUBLIC_URL (DESIGN.md "URLs").

A module of its own, below both: discovery publishes them, and the client assertion check
(:mod:`smart.oauth.assertions`, which discovery imports for its algorithms) needs the token URL.
"""
from __future__ import annotations

AUTHORIZE_PATH = "/auth/authorize"
TOKEN_PATH = "/auth/token"
INTROSPECT_PATH = "/auth/introspect"
REVOKE_PATH = "/auth/revoke"
JWKS_PATH = "/.well-known/jwks.json"
SMART_STYLE_PATH = "/auth/smart-style.json"
#: OpenID Connect (issue 14): userinfo (OIDC Core 1.0 §5.3), RP-Initiated Logout 1.0 §2, and
#: the signed-in user's page of approved apps.
USERINFO_PATH = "/auth/userinfo"
END_SESSION_PATH = "/auth/logout"
APPS_PATH = "/auth/apps"
