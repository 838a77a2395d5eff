"""OpenID Connect routes that browser viewers expect beside SMART (issue 14): userinfo,
RP-initiated logout, and the signed-in user's page of approved apps."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import jsonify, redirect, request, session
from sqlalchemy import select

from smart import audit, authz
from smart.oauth import consents
from smart.oauth.grants import scope_has
from smart.oauth.server import query_client
from smart.oauth.urls import APPS_PATH, END_SESSION_PATH, USERINFO_PATH
from smart.store.db import get_session
from smart.store.models import User
from smart.tokens import jwt as tokens
from smart.web import login, picker
from smart.web.routes import _csrf_ok, _json_error, _page, bp, current_user, describe_scope


# --- userinfo ------------------------------------------------------------------------------
def _challenge(exc: authz.AuthorizationError):
    """RFC 6750 §3 error: JSON body and ``WWW-Authenticate: Bearer``."""
    response = _json_error(exc.status, exc.error or "invalid_request", exc.description)
    response.headers["WWW-Authenticate"] = exc.www_authenticate("smart")
    return response


def _display_name(user: User) -> str:
    """A patient user's name as the PACS knows it, else the username."""
    if user.role == "patient" and user.patient:
        known = picker.describe_patient(user.patient)
        if known is not None and known.name != picker.UNNAMED:
            return known.name
    return user.username


def user_claims(user: User, scope: str) -> dict:
    """The UserInfo claims of *user* for a token granted *scope* (OIDC Core 1.0 §5.3.2).

    ``sub`` always; ``fhirUser`` (absolute URL, SMART 2.2 §Scopes for requesting identity
    data) with the ``fhirUser`` scope; ``name`` and ``preferred_username`` with ``profile``
    or ``fhirUser``.
    """
    claims = {"sub": user.username}
    if scope_has(scope, "fhirUser") and user.fhir_user:
        claims["fhirUser"] = f"{tokens.fhir_base()}/{user.fhir_user}"
    if scope_has(scope, "profile") or scope_has(scope, "fhirUser"):
        claims["name"] = _display_name(user)
        claims["preferred_username"] = user.username
    return claims


@bp.route(USERINFO_PATH, methods=["GET", "POST"])
def userinfo():
    """UserInfo endpoint (OIDC Core 1.0 §5.3): who the access token's user is.

    Needs a Bearer access token (header) granted ``openid``, checked by the one token check
    (:func:`smart.authz.current_grant`), and issued by this server: a trusted EHR's token
    names the EHR's user, whom this server does not know (401); errors follow RFC 6750 §3 (401 ``invalid_token``,
    403 ``insufficient_scope``) with ``WWW-Authenticate``.
    """
    try:
        grant = authz.current_grant()
        if grant.issuer is not None:  # an EHR's token: its sub is the EHR's user, not ours
            raise authz.Unauthorized("the access token was not issued by this server")
        if not scope_has(grant.scope, "openid"):
            raise authz.Forbidden("the access token was not granted the openid scope")
        user = get_session().scalars(select(User).where(User.username == str(grant.claims.get("sub")))).first()
        if user is None:
            raise authz.Forbidden("the access token names no user")
    except authz.AuthorizationError as exc:
        return _challenge(exc)
    # Cache-Control: no-store is added by the blueprint for every client endpoint.
    return jsonify(user_claims(user, grant.scope))


# --- RP-initiated logout -----------------------------------------------------------------------
def _logout_target() -> tuple[str | None, str | None, str | None]:
    """Where RP-Initiated Logout 1.0 §3 lets this logout request go.

    Returns ``(URI, client_id, None)``, or ``(None, None, why not)``; ``(None, None, None)`` when
    no ``post_logout_redirect_uri`` was asked for.
    """
    values = request.values
    uri, client_id, hint = (values.get(name) or None for name in ("post_logout_redirect_uri", "client_id",
                                                                   "id_token_hint"))
    audiences: list = []
    if hint:
        try:
            aud = tokens.decode_id_token_hint(hint).get("aud")
        except tokens.InvalidToken as exc:
            return None, None, exc.description
        audiences = aud if isinstance(aud, list) else [aud]
        if client_id and client_id not in audiences:
            return None, None, "client_id is not the audience of the id_token_hint."
    if not uri:
        return None, None, None
    client = query_client(client_id or (audiences[0] if len(audiences) == 1 else None))
    if client is None:
        return None, None, "Give client_id or id_token_hint with post_logout_redirect_uri."
    if uri not in (client.post_logout_redirect_uris or []):
        return None, None, "The post_logout_redirect_uri is not registered for this client."
    return uri, client.client_id, None


def _hint_names(user: User) -> bool:
    """Whether the request's ``id_token_hint`` is an id_token of ours issued to *user*: the RP
    proved the logout is for the signed-in End-User (RP-Initiated Logout 1.0 §2)."""
    hint = request.values.get("id_token_hint")
    if not hint:
        return False
    try:
        return tokens.decode_id_token_hint(hint).get("sub") == user.username
    except tokens.InvalidToken:
        return False


def _sign_out(user: User | None) -> None:
    """End this browser's login session (and audit it when there was one)."""
    if user is not None:
        audit.record("logout", who=user.fhir_user, user=None if user.fhir_user else user.username,
                     agent_patient=user.patient if user.role == "patient" else None, address=request.remote_addr)
    session.clear()


def _signed_out():
    """After signing out: the validated redirect (with ``state``, RP-Initiated Logout 1.0 §3),
    else the signed-out page (400 naming why a redirect was refused)."""
    target, _, problem = _logout_target()
    if target is not None:
        state = request.values.get("state")
        separator = "&" if "?" in target else "?"
        return redirect(target + (separator + urlencode({"state": state}) if state else ""), code=302)
    return _page("smart/signed_out.html", status=400 if problem else 200, fields=[], message=problem)


def _confirm_page(user: User, message: str | None = None, status: int = 200):
    """The page asking "Sign out?" (RP-Initiated Logout 1.0 §2). Its form carries only a redirect
    validated here (``client_id`` resolved from the hint's ``aud``), never the hint itself."""
    target, client_id, problem = _logout_target()
    fields = [("post_logout_redirect_uri", target), ("client_id", client_id)] if target else []
    if target and request.values.get("state"):
        fields.append(("state", request.values["state"]))
    if problem:  # asked for a redirect this request cannot have: say so before asking
        status, message = 400, message or f"You will not be sent back to the app: {problem}"
    return _page("smart/sign_out.html", status=status, fields=fields, user=user, message=message, cancelled=False)


@bp.route(END_SESSION_PATH, methods=["GET", "POST"])
def end_session():  # a browser page: it only ends this browser's login session
    """End-session endpoint (RP-Initiated Logout 1.0 §2): sign this browser out.

    Signs out at once when there is no login session, or when a valid ``id_token_hint`` names
    the signed-in user; otherwise asks "Sign out?" (the spec's MUST: a request without such a
    hint may come from any site), and signs out when the user's form (CSRF token, ``action=logout``,
    ``decision=sign_out``) answers yes. After signing out it redirects to
    ``post_logout_redirect_uri`` (with ``state``) only when it is registered for the client
    named by ``client_id`` or by a valid ``id_token_hint`` (whose audience must match
    ``client_id``); otherwise shows a "signed out" page (400 when the redirect was refused,
    naming why). The pages are unframeable.
    """
    user = current_user()
    answered = request.method == "POST" and request.form.get("action") == "logout"
    if user is None or _hint_names(user):
        _sign_out(user)
        return _signed_out()
    if not answered:
        return _confirm_page(user)
    if request.form.get("decision") == "cancel":
        return _page("smart/sign_out.html", fields=[], user=user, message=None, cancelled=True)
    if not _csrf_ok() or request.form.get("decision") != "sign_out":
        return _confirm_page(user, "The form expired; please answer again.", status=400)
    _sign_out(user)
    return _signed_out()


# --- the user's approved apps -----------------------------------------------------------------
def _apps_page(user: User, message: str | None = None, status: int = 200):
    return _page("smart/apps.html", status=status, fields=[], user=user, apps=consents.approved_apps(user),
                 describe=describe_scope, message=message)


def _login_page(status: int = 200, message: str | None = None):
    return _page("smart/login.html", status=status, fields=[], form_action=APPS_PATH, message=message)


@bp.route(APPS_PATH, methods=["GET", "POST"])
def apps():  # a browser page: the login session is its credential, CSRF tokens its forms
    """The signed-in user's approved apps (issue 14): list them, withdraw one.

    Withdrawing forgets the remembered consent and revokes the refresh and access tokens
    the app holds for this user (:func:`smart.oauth.consents.withdraw`). Without a login
    session, the page asks for one. Forms carry the session's CSRF token.
    """
    user = current_user()
    if request.method == "GET":
        return _apps_page(user) if user is not None else _login_page()
    if not _csrf_ok():
        return _login_page(400, "The form expired; please sign in again.")
    action = request.form.get("action")
    if action == "login":
        if login.sign_in(request.form, request.remote_addr) is None:
            return _login_page(401, "Unknown username or wrong password.")
        return redirect(APPS_PATH, code=303)
    if user is None:
        return _login_page()
    if action == "withdraw":
        client_id = request.form.get("client_id", "")
        if consents.withdraw(user, client_id):
            return _apps_page(user, "Access withdrawn: the app must ask you again.")
        return _apps_page(user, "That app was not on your list.", status=404)
    return _apps_page(user, "Unknown action.", status=400)
