"""HTTP routes of the authorization server: authorize (login, consent), token, discovery, JWKS."""
from __future__ import annotations

import hmac
import secrets

from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError, OAuth2Error
from flask import Blueprint, current_app, jsonify, render_template, request, session

from smart import authz, scopes
from smart.oauth import consents, discovery, revocation
from smart.oauth.grants import context_patient, end_user_scope, find_launch, launch_refusal, scope_has
from smart.oauth.launches import FHIR_ID, LAUNCH_LIFETIME, AdminError
from smart.oauth.launches import create_launch as make_launch
from smart.oauth.server import query_client, server
from smart.store.db import get_session
from smart.store.models import ACCESS_CLIENT, ACCESS_USER, User
from smart.tokens import jwt as tokens
from smart.tokens import keys
from smart.web import login, picker, prompts

bp = Blueprint("smart", __name__, template_folder="templates")

#: Scopes the user may not deselect on the consent page: they carry no data access.
FIXED_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter"})


# --- login state -------------------------------------------------------------------------
def current_user() -> User | None:
    """The user logged in on this browser session, or None."""
    user_id = session.get("user_id")
    return get_session().get(User, user_id) if user_id is not None else None


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def _csrf_ok() -> bool:
    sent = request.form.get("csrf_token", "")
    return bool(session.get("csrf")) and hmac.compare_digest(sent, session["csrf"])


def _oauth_fields() -> list[tuple[str, str]]:
    """The authorization request's parameters, to carry through the login and consent forms."""
    skip = {"csrf_token", "action", "username", "password", "decision", "grant_scope", "scope_selection",
            "patient", "patient_query", "patient_search"}
    return [(k, v) for k, vs in request.values.lists() if k not in skip for v in vs]


# --- pages ----------------------------------------------------------------------------------
def _page(template: str, status: int = 200, **context):
    context.setdefault("fields", _oauth_fields())
    context["csrf_token"] = _csrf_token()
    response = current_app.make_response((render_template(template, **context), status))
    # The pages take credentials: never frame them (clickjacking), never cache them.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def _error_page(error: OAuth2Error):
    """Show an authorization error without redirecting (RFC 6749 §4.1.2.1)."""
    return _page(
        "smart/error.html",
        status=400,
        fields=[],
        error=error.error,
        description=error.description or "",
    )


def _authorization_error(error: OAuth2Error):
    if error.redirect_uri:
        # The client and redirect_uri were validated: report through the redirect.
        return server.handle_error_response(None, error)
    return _error_page(error)


_needs_picker = prompts.needs_picker


def _issue_code(grant, user: User, scope: str):
    """Redirect to the app with a code for *scope* (RFC 6749 §4.1.2)."""
    grant.request.granted_scope = scope
    grant.request.auth_time = session.get("auth_time")
    grant.request.smart_style_url = tokens.issuer() + discovery.SMART_STYLE_PATH
    return server.create_authorization_response(grant_user=user, grant=grant)


def _silent_answer(grant, user: User | None):
    """The answer to ``prompt=none`` (OIDC Core 1.0 §3.1.2.1): a code, or an error, always by
    redirect and never a page; framable by the client's own origins only (silent renew)."""
    error = prompts.silent_error(grant, user)
    if error is not None:
        response = server.handle_error_response(None, error)
    else:
        response = _issue_code(grant, user, end_user_scope(grant.request.scope, user))
    response.headers["Content-Security-Policy"] = prompts.frame_ancestors(grant.request.client)
    return response


def _after_login(grant, user: User, asked: frozenset[str]):
    """Back to the app with a code when the user approved these scopes before (and no
    ``prompt=consent``), else the consent page."""
    if "consent" not in asked and prompts.consent_remembered(grant, user):
        return _issue_code(grant, user, end_user_scope(grant.request.scope, user))
    return _consent_page(grant, user)


def _consent_page(grant, user: User, message: str | None = None, status: int = 200):
    # Only what this user may grant is offered (no system/ scopes, SMART 2.2 §Backend Services).
    requested = end_user_scope(grant.request.scope, user)
    data = grant.request.payload.data
    launch = find_launch(data.get("launch")) if scope_has(requested, "launch") else None
    refusal = launch_refusal(launch, user) if launch is not None else None
    if refusal:
        # Refuse before asking for consent: the page would describe a context the token
        # cannot carry (RFC 6749 §4.1.2.1 access_denied, through the validated redirect).
        return _authorization_error(AccessDeniedError(refusal, redirect_uri=data.get("redirect_uri"),
                                                      state=data.get("state")))
    needs_picker = _needs_picker(grant, user)
    # The patient the token will carry, shown as the context of the consent.
    patient = context_patient(launch, user) if launch is not None or user.role == "patient" else None
    items = [
        {"scope": s, "fixed": s in FIXED_SCOPES, "label": describe_scope(s)}
        for s in requested.split()
    ]
    chosen = set(request.form.getlist("grant_scope")) if request.form.get("scope_selection") else None
    for item in items:
        item["checked"] = item["fixed"] or chosen is None or item["scope"] in chosen
    query = picker.clean_query(request.form.get("patient_query")) if request.method == "POST" else ""
    patients, picker_message = [], None
    if needs_picker:
        try:
            patients = picker.find_patients(query, among=authz.stored_patients(ACCESS_USER, user.username))
        except picker.PickerUnavailable as exc:
            picker_message = exc.message
    return _page(
        "smart/consent.html",
        status=status,
        client=grant.request.client,
        user=user,
        items=items,
        needs_picker=needs_picker,
        patients=patients,
        patient_query=query,
        picker_message=picker_message,
        picker_limit=picker.PICKER_LIMIT,
        selected_patient=(request.form.get("patient") or "").strip() if request.method == "POST" else "",
        patient=patient,
        patient_info=picker.describe_patient(patient) if patient else None,
        message=message,
    )


def _chosen_patient() -> tuple[str | None, str | None]:
    """The patient the practitioner chose: one of the listed ones or a typed id.

    Returns ``(patient id, None)`` or ``(None, message for the page)``.
    """
    values = {v.strip() for v in request.form.getlist("patient") if v.strip()}
    if len(values) > 1:
        return None, "Choose one patient: pick one from the list or type an id, not both."
    patient = values.pop() if values else ""
    if not FHIR_ID.match(patient):
        return None, "Choose a patient from the list or enter a valid patient id."
    return patient, None


def describe_scope(scope: str) -> str:
    """A short human description of one scope for the consent page."""
    fixed = {
        "openid": "Know who you are",
        "fhirUser": "See your FHIR user record",
        "profile": "See your profile",
        "launch": "Open in the context of the current record",
        "launch/patient": "Work with one patient's record",
        "launch/encounter": "Work with one encounter",
        "offline_access": "Keep access while you are away (offline)",
        "online_access": "Keep access while you are signed in",
    }
    if scope in fixed:
        return fixed[scope]
    try:
        parsed = scopes.parse_scope(scope)
    except scopes.InvalidScope:
        return scope
    if parsed is None:
        return scope
    verbs = [name for letter, name in zip("cruds", ("create", "read", "update", "delete", "search"))
             if letter in parsed.interactions]
    what = "all data" if parsed.resource_type == "*" else parsed.resource_type
    whose = {"patient": "of the selected patient", "user": "you can access", "system": "on the system"}
    return f"{', '.join(verbs).capitalize()} {what} {whose[parsed.context]}"


#: Authlib 1.9 builds some error descriptions from request values and raises ValueError
#: when those hold characters RFC 6749 §5.2 forbids in error_description (``"``, non-ASCII).
_FORBIDDEN_DESCRIPTION = "Error description contains forbidden characters"


@bp.errorhandler(ValueError)
def _malformed_parameter(exc: ValueError):
    if _FORBIDDEN_DESCRIPTION not in str(exc):
        raise exc
    error = InvalidRequestError("A request parameter holds characters that are not allowed.")
    if request.endpoint == "smart.authorize":
        return _error_page(error)
    return server.handle_error_response(None, error)


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize():
    """Authorization endpoint (RFC 6749 §3.1, SMART 2.2 §Obtain authorization code).

    GET or POST with the authorization request shows the login page, then the consent
    page; those forms post back here with ``action`` login / consent / switch.
    """
    user = current_user()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _authorization_error(error)

    asked = prompts.requested_prompts()
    problem = prompts.prompt_error(asked, grant)
    if problem is not None:
        return _authorization_error(problem)
    action = request.form.get("action") if request.method == "POST" else None
    if user is not None and action is None and prompts.login_too_old(session.get("auth_time")):
        user, asked = None, asked | {"login"}  # max_age: the login is too old to count
    if action is None and "none" in asked:
        return _silent_answer(grant, user)
    if action and not _csrf_ok():
        return _page("smart/login.html", status=400, message="The form expired; please sign in again.")

    if action == "switch":
        session.pop("user_id", None)
        return _page("smart/login.html", client=grant.request.client)

    if action == "login":
        candidate = login.sign_in(request.form, request.remote_addr, client_id=grant.request.client.client_id)
        if candidate is None:
            # One message for wrong, unknown and throttled alike (no username enumeration).
            return _page("smart/login.html", status=401, client=grant.request.client,
                         message="Unknown username or wrong password.")
        return _after_login(grant, candidate, asked)

    if user is None or (action is None and "login" in asked):
        # prompt=login: sign in again even with a session (OIDC Core 1.0 §3.1.2.1).
        return _page("smart/login.html", client=grant.request.client)

    if action != "consent":
        return _after_login(grant, user, asked)

    if request.form.get("patient_search") and _needs_picker(grant, user):
        # The picker's Search button submits the consent form without a decision:
        # show the page again with the matching patients and the ticks kept.
        return _consent_page(grant, user)

    if request.form.get("decision") != "approve":
        return server.create_authorization_response(grant_user=None, grant=grant)

    requested = end_user_scope(grant.request.scope, user).split()
    if request.form.get("scope_selection"):
        chosen = set(request.form.getlist("grant_scope")) | (FIXED_SCOPES & set(requested))
        grant.request.granted_scope = " ".join(s for s in requested if s in chosen)
    else:
        grant.request.granted_scope = " ".join(requested)
    if _needs_picker(grant, user):
        patient, problem = _chosen_patient()
        if problem:
            return _consent_page(grant, user, message=problem, status=400)
        if not authz.practitioner_may_see(user.username, patient):
            return _consent_page(grant, user, message="You have no access to this patient's records.", status=403)
        grant.request.selected_patient = patient
    consents.remember(user, grant.request.client.client_id, grant.request.granted_scope)
    return _issue_code(grant, user, grant.request.granted_scope)


@bp.route("/auth/token", methods=["POST"])
def token():
    """Token endpoint (RFC 6749 §3.2): authorization_code and refresh_token grants."""
    try:
        return server.create_token_response()
    except OAuth2Error as error:
        return server.handle_error_response(None, error)


@bp.route("/auth/introspect", methods=["POST"])
def introspect():
    """Token introspection (RFC 7662, SMART 2.2 §Token Introspection)."""
    return revocation.introspect()


@bp.route("/auth/revoke", methods=["POST"])
def revoke():
    """Token revocation (RFC 7009)."""
    return revocation.revoke()


@bp.route("/auth/launch", methods=["POST"])
def create_launch():
    """Create an EHR launch context for a trusted EHR back end (issue 4 "EHR launch").

    The caller presents a Backend Services access token (``client_credentials``) whose
    scope includes ``launch``. Body (form or JSON): ``patient``, optional ``encounter``,
    ``user`` (username), ``need_patient_banner`` (default false: the EHR shows the patient). Answers 201 with
    ``{"launch": id, "expires_in": seconds}``.
    """
    try:
        grant = authz.current_grant()  # the one bearer parser and token check
    except authz.AuthorizationError as exc:
        response = _json_error(exc.status, exc.error or "invalid_request", exc.description)
        response.headers["WWW-Authenticate"] = exc.www_authenticate("smart")
        return response
    claims = grant.claims
    # A trusted EHR's token names the EHR's client: never one of ours of the same client_id.
    backend = query_client(claims.get("client_id")) if grant.issuer is None else None
    is_backend_token = (
        backend is not None
        and backend.check_grant_type("client_credentials")
        and claims.get("sub") == claims.get("client_id")
        and "patient" not in claims
    )
    if not scope_has(claims.get("scope"), "launch") or not is_backend_token:
        return _bearer_error(403, "insufficient_scope", "The token needs the launch scope of a backend client.")
    try:
        data = request.get_json(silent=True) if request.is_json else request.form
    except RecursionError:  # JSON nested deeper than the parser's limit: not a ValueError
        return _json_error(400, "invalid_request", "The body is not a JSON object.")
    data = data if isinstance(data, dict) or hasattr(data, "get") else {}
    fields, problem = launch_fields(data)
    if problem:
        return _json_error(400, "invalid_request", problem)
    if fields["patient"] is not None and not FHIR_ID.match(fields["patient"]):
        return _json_error(400, "invalid_request", f"patient {fields['patient']!r} is not a valid FHIR id")
    allowed = authz.stored_patients(ACCESS_CLIENT, backend.client_id)
    if fields["patient"] is not None and allowed is not None and fields["patient"] not in allowed:
        # The EHR may launch only for patients it was granted (smart grant-access --client-id).
        return _bearer_error(403, "insufficient_scope", "This client may not launch for this patient.")
    banner = str(data.get("need_patient_banner", "false")).lower() in ("true", "1", "yes")
    try:
        launch_id = make_launch(
            patient=fields["patient"],
            encounter=fields["encounter"],
            username=fields["user"],
            need_patient_banner=banner,
        )
    except AdminError as exc:
        return _json_error(400, "invalid_request", str(exc))
    response = jsonify({"launch": launch_id, "expires_in": LAUNCH_LIFETIME})
    response.status_code = 201
    return response


def launch_fields(data) -> tuple[dict, str | None]:
    """The ``patient``, ``encounter`` and ``user`` of a launch request, each a string or ``None``.

    Parameters
    ----------
    data : mapping
        The JSON object or form of ``POST /auth/launch``.

    Returns
    -------
    tuple of (dict, str or None)
        The fields (empty ones as ``None``), and what is wrong with them: a JSON body may give
        a list or a number where a string belongs, which is an ``invalid_request``
        (RFC 6749 Section 5.2), not a value to store.
    """
    fields = {name: data.get(name) or None for name in ("patient", "encounter", "user")}
    wrong = sorted(name for name, value in fields.items() if value is not None and not isinstance(value, str))
    return fields, (f"{', '.join(wrong)} must be a string" if wrong else None)


def _json_error(status: int, error: str, description: str):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    return response


def _bearer_error(status: int, error: str | None, description: str):
    """RFC 6750 §3 error with ``WWW-Authenticate: Bearer``."""
    response = _json_error(status, error or "invalid_request", description)
    value = 'Bearer realm="smart"'
    if error:
        value += f', error="{error}"'
    response.headers["WWW-Authenticate"] = value
    return response


@bp.route("/.well-known/smart-configuration")
@bp.route("/fhir/.well-known/smart-configuration")
def smart_configuration():
    """SMART discovery document (SMART 2.2 §Using well-known)."""
    return jsonify(discovery.smart_configuration())


@bp.route("/.well-known/openid-configuration")
def openid_configuration():
    """OpenID Provider metadata (OIDC Discovery 1.0 §3)."""
    return jsonify(discovery.openid_configuration())


@bp.route("/.well-known/jwks.json")
def jwks():
    """Public signing keys (RFC 7517 §5), current and recently retired."""
    response = jsonify(keys.public_jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.route("/auth/smart-style.json")
def smart_style():
    """Style hints for launched apps (SMART 2.2 §Styling, ``smart_style_url``)."""
    response = jsonify(discovery.SMART_STYLE)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
