"""OpenID Connect ``prompt`` (OIDC Core 1.0 §3.1.2.1) and remembered consent at the authorization
endpoint: when a code may be issued without showing a page, and who may frame the answer."""
from __future__ import annotations

from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError, OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError
from flask import request

from smart.oauth import consents
from smart.oauth.grants import end_user_scope, find_launch, launch_refusal, scope_has
from smart.store.models import Client, User, now
from smart.tokens import jwt as tokens

#: ``prompt`` values this server acts on; others are ignored (OIDC Core 1.0 §3.1.2.1 lists
#: ``select_account`` too: with one account per browser session there is nothing to select).
PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account"})


def requested_prompts() -> frozenset[str]:
    """The space-separated ``prompt`` values of the current authorization request."""
    return frozenset((request.values.get("prompt") or "").split())


def login_too_old(auth_time: int | None) -> bool:
    """Whether the request's ``max_age`` (OIDC Core 1.0 §3.1.2.1, seconds) asks for a newer login
    than the one at *auth_time*; a malformed ``max_age`` is ignored."""
    raw = request.values.get("max_age") or ""
    if not raw.isdigit() or len(raw) > 12:
        return False
    return auth_time is None or now() - int(auth_time) > int(raw)


def needs_picker(grant, user: User) -> bool:
    """A practitioner's standalone ``launch/patient`` needs a patient chosen on the consent page
    (SMART 2.2 §Standalone launch: the server shows a patient picker)."""
    requested = grant.request.scope or ""
    launch = find_launch(grant.request.payload.data.get("launch")) if scope_has(requested, "launch") else None
    return scope_has(requested, "launch/patient") and launch is None and user.role != "patient"


def _redirected(error: OAuth2Error, grant) -> OAuth2Error:
    data = grant.request.payload.data
    error.redirect_uri = data.get("redirect_uri")
    error.state = data.get("state")
    return error


def prompt_error(prompts: frozenset[str], grant) -> OAuth2Error | None:
    """``invalid_request`` for ``none`` together with another value (OIDC Core 1.0 §3.1.2.1),
    sent to the validated redirect URI; else None."""
    if "none" in prompts and len(prompts & PROMPT_VALUES) > 1:
        return _redirected(InvalidRequestError("prompt=none cannot be combined with other values."), grant)
    return None


def consent_remembered(grant, user: User) -> bool:
    """Whether *user* may be sent back to the app with a code without the consent page.

    True when the user approved every scope of this request for this client before, the
    request needs no patient to be picked, and its EHR launch (if any) is one the user may use.
    """
    requested = end_user_scope(grant.request.scope, user)
    if needs_picker(grant, user):
        return False
    launch = find_launch(grant.request.payload.data.get("launch")) if scope_has(requested, "launch") else None
    if launch is not None and launch_refusal(launch, user):
        return False
    return consents.covers(user, grant.request.client.client_id, requested)


def silent_error(grant, user: User | None) -> OAuth2Error | None:
    """Why a ``prompt=none`` request gets no code, as the error for its redirect URI, or None.

    OIDC Core 1.0 §3.1.2.6: ``login_required`` without a login session (or with one of
    another user than the ``id_token_hint`` names), ``access_denied`` for
    an EHR launch the user may not use, ``interaction_required`` when a patient must be
    picked, ``consent_required`` when the scopes were not approved before.
    """
    if user is None:
        return _redirected(LoginRequiredError("The user is not signed in."), grant)
    if not _hint_names(grant.request.payload.data.get("id_token_hint"), user):
        return _redirected(LoginRequiredError("Another user is signed in."), grant)
    requested = end_user_scope(grant.request.scope, user)
    launch = find_launch(grant.request.payload.data.get("launch")) if scope_has(requested, "launch") else None
    refusal = launch_refusal(launch, user) if launch is not None else None
    if refusal:
        return _redirected(AccessDeniedError(refusal), grant)
    if needs_picker(grant, user):
        return _redirected(InteractionRequiredError("A patient must be chosen."), grant)
    if not consents.covers(user, grant.request.client.client_id, requested):
        return _redirected(ConsentRequiredError("The user has not approved these scopes for this app."), grant)
    return None


def _hint_names(hint: str | None, user: User) -> bool:
    """Whether an ``id_token_hint`` (OIDC Core 1.0 §3.1.2.1), if any, is ours and names *user*:
    a silent renew must not hand the app a code for whoever else signed in since."""
    if not hint:
        return True
    try:
        return tokens.decode_id_token_hint(hint).get("sub") == user.username
    except tokens.InvalidToken:
        return False


def frame_ancestors(client: Client | None) -> str:
    """The CSP ``frame-ancestors`` value for a ``prompt=none`` answer: the origins of *client*'s
    registered http(s) redirect URIs (silent renew runs in a hidden iframe of the app), or
    ``'none'`` (CSP Level 2 §7.7)."""
    origins = sorted(client.origins) if client is not None else []
    return "frame-ancestors " + (" ".join(origins) if origins else "'none'")
