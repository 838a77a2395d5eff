"""Share links over HTTP (issue 15): the patient's API (``/auth/shares``) and the recipient's page
(``/share/<secret>``).

API (the patient's own access token; OAuth-shaped JSON errors, RFC 6750 §3):

- ``POST /auth/shares`` ``{"study": "<StudyInstanceUID>" | "all", "expires_in": <s>, "pin": "<digits>"}``
  -> 201 ``{"id", "url", "expires_at"}``;
- ``GET /auth/shares`` -> the patient's shares (study, expiry, last use, uses; never a secret);
- ``DELETE /auth/shares/{id}`` -> 204; the share's tokens are refused from the next request.

Who may share: a patient user (``fhirUser`` ``Patient/x``) whose token may read ImagingStudy
of that patient (``patient/ImagingStudy.rs`` or ``.r``, or ``user/ImagingStudy.r*``), for a
study every series of which is filed under that patient. A share's own token never shares.

The recipient opens the link (no account): after the PIN, if there is one (checked under the
password throttle, :func:`smart.web.login.throttled_check`), the page gets a token bound to the
study (:func:`smart.tokens.shares.mint_token`) and opens the bundled viewer with it, with a
button that downloads the study as a DICOM-media ZIP.
"""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, redirect, render_template, request
from werkzeug.security import check_password_hash

from smart import audit, authz
from smart.tokens import jwt as tokens
from smart.tokens import shares
from smart.web import login
from smart.web.routes import _csrf_ok, _csrf_token, current_user

bp = Blueprint("shares", __name__, template_folder="templates")


def _error(status: int, error: str, description: str, challenge: bool = False):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    if challenge:
        response.headers["WWW-Authenticate"] = f'Bearer realm="smart", error="{error}"'
    return response


def sharing_patient() -> str:
    """The Patient id of the patient user whose token made this request.

    Raises
    ------
    smart.authz.AuthorizationError
        No valid token (401), or a token that is not a patient user's own, or cannot read its
        ImagingStudy, or was minted by a share (403).
    """
    grant = authz.current_grant()
    own = grant.own_patient()
    if grant.share is not None or own is None:
        raise authz.Forbidden("only a patient's own token may share their images")
    authz.check_patient(grant, "ImagingStudy", own, "r")
    return own


def _with_patient(view):
    def wrapped(*args, **kwargs):
        try:
            patient = sharing_patient()
        except authz.AuthorizationError as exc:
            response = _error(exc.status, exc.error or "invalid_request", exc.description)
            for name, value in exc.headers("smart").items():
                response.headers[name] = value
            return response
        return view(patient, *args, **kwargs)
    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def share_url(secret: str) -> str:
    """The link the patient hands over: ``<FACADE_PUBLIC_URL>/share/<secret>``."""
    return f"{tokens.issuer()}/share/{secret}"


@bp.post("/auth/shares")
@_with_patient
def create(patient: str):
    """Create a share link of one of the patient's studies, or of all of them (201)."""
    try:
        study, expires_in, pin = shares.parse_request(request.get_json(silent=True))
    except shares.ShareError as exc:
        return _error(400, "invalid_request", exc.description)
    if study != shares.ALL_STUDIES:
        owners = shares.study_owners(study)
        if owners is None:
            return _error(404, "invalid_request", "no such study")
        if owners != frozenset({patient}):
            return _error(403, "insufficient_scope", "this study is not only yours to share")
    share, secret = shares.create_share(patient, study, expires_in, pin,
                                        str(authz.current_grant().claims.get("sub") or patient))
    response = jsonify({"id": share.id, "url": share_url(secret), "expires_at": share.expires_at})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/auth/shares")
@_with_patient
def list_shares(patient: str):
    """The patient's share links that are not revoked (expired ones marked), newest first."""
    response = jsonify({"shares": [shares.describe(s) for s in shares.shares_of(patient)]})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/auth/shares/<share_id>")
@_with_patient
def revoke(patient: str, share_id: str):
    """Revoke one of the patient's share links at once (204), or 404."""
    if not shares.revoke(share_id, patient):
        return _error(404, "invalid_request", "no such share")
    return "", 204


# --- the recipient's page ----------------------------------------------------------------
def _page(template: str, status: int = 200, **context):
    response = current_app.make_response((render_template(template, csrf_token=_csrf_token(), **context), status))
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"  # the link's secret is in this page's URL
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


@bp.route("/share/<secret>", methods=["GET", "POST"])
def redeem(secret: str):
    """The share link: the PIN form, then the viewer opened on the study with a token bound to it.

    A revoked, expired or unknown link is 404; a wrong or throttled PIN 401 with one message.
    """
    share = shares.find(secret)
    if share is None:
        shares.announce("refused", None, address=request.remote_addr, reason="unknown, expired or revoked link")
        return _page("smart/share_gone.html", status=404)
    if share.pin_hash is not None:
        if request.method != "POST":
            return _page("smart/share_pin.html")
        if not _csrf_ok():
            return _page("smart/share_pin.html", status=400, message="The form expired; please try again.")
        pin = request.form.get("pin", "")
        if not login.throttled_check(f"share:{share.id}", request.remote_addr,
                                     lambda: check_password_hash(share.pin_hash, pin)):
            shares.announce("refused", share, address=request.remote_addr, reason="wrong or throttled PIN")
            return _page("smart/share_pin.html", status=401, message="Wrong PIN, or too many tries: wait and retry.")
    token, claims = shares.mint_token(share)
    study = None if share.study == shares.ALL_STUDIES else share.study
    return _page("smart/share_view.html", token=token, study=study, expires_at=claims["exp"],
                 base=tokens.issuer())


# --- the patient's "My images" page --------------------------------------------------------
#: The patient's page of studies and share links (a browser page: the login session is its
#: credential, the session's CSRF token its forms').
IMAGES_PATH = "/auth/images"


def _images_page(user, status: int = 200, message: str | None = None, link: str | None = None):
    return _page("smart/images.html", status=status, user=user, studies=shares.patient_studies(user.patient),
                 shares=[shares.describe(s) for s in shares.shares_of(user.patient)], message=message, link=link,
                 max_days=max(1, shares.max_seconds() // 86400), default_days=shares.DEFAULT_SHARE_SECONDS // 86400,
                 when=_when)


def _when(seconds: int | None) -> str:
    return "never" if not seconds else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _images_login(status: int = 200, message: str | None = None):
    response = _page("smart/login.html", status=status, fields=[], form_action=IMAGES_PATH, message=message)
    return response


def _share_from_form(user):
    """Create a share from the page's form; returns the page."""
    try:
        days = int(request.form.get("days") or shares.DEFAULT_SHARE_SECONDS // 86400)
    except ValueError:
        return _images_page(user, 400, "Give the number of days as a whole number.")
    body = {"study": request.form.get("study", ""), "expires_in": days * 86400, "pin": request.form.get("pin") or None}
    try:
        study, expires_in, pin = shares.parse_request(body)
    except shares.ShareError as exc:
        return _images_page(user, 400, f"Not shared: {exc.description}.")
    if study != shares.ALL_STUDIES and shares.study_owners(study) != frozenset({user.patient}):
        return _images_page(user, 403, "Not shared: that study is not only yours.")
    _, secret = shares.create_share(user.patient, study, expires_in, pin, user.username)
    return _images_page(user, 201, "Shared. Copy the link now: it is shown only once.", link=share_url(secret))


@bp.route(IMAGES_PATH, methods=["GET", "POST"])
def images():  # a browser page: the login session is its credential, CSRF tokens its forms
    """The signed-in patient's "My images" page (issue 15): their studies, a form to share one
    (or all) with an expiry and an optional PIN, their links with last use, and Revoke."""
    user = current_user()
    if request.method == "POST" and not _csrf_ok():
        return _images_login(400, "The form expired; please sign in again.")
    action = request.form.get("action") if request.method == "POST" else None
    if action == "login":
        if login.sign_in(request.form, request.remote_addr) is None:
            return _images_login(401, "Unknown username or wrong password.")
        return redirect(IMAGES_PATH, code=303)
    if user is None:
        return _images_login()
    if user.role != "patient" or not user.patient:
        return _page("smart/error.html", status=403, error="access_denied",
                     description="This page is for patients: their own images.")
    if action == "share":
        return _share_from_form(user)
    if action == "revoke":
        if shares.revoke(request.form.get("share_id", ""), user.patient):
            return _images_page(user, message="Link revoked: it no longer opens.")
        return _images_page(user, 404, "That link was not on your list.")
    return _images_page(user)


#: A share's events (:data:`smart.tokens.shares.EVENTS`) as audit kinds and outcomes (issue 16:
#: share links created, used and revoked; a refused link or PIN is a use that failed).
_AUDITED = {
    "created": ("share-created", audit.events.SUCCESS),
    "redeemed": ("share-used", audit.events.SUCCESS),
    "refused": ("share-used", audit.events.MINOR_FAILURE),
    "revoked": ("share-revoked", audit.events.SUCCESS),
}


def _audit_share(event: str, share, details: dict) -> None:
    """Record a share event in the audit trail: the patient, the study (none for ``all``), the
    patient who made the link (created, revoked), the address and why a use was refused; the
    link's secret and PIN are never known here."""
    kind, outcome = _AUDITED[event]
    study = share.study if share is not None and share.study != "all" else None
    audit.record(kind, outcome,
                 patient=share.patient if share is not None else None,
                 study=study,
                 who=share.created_by if share is not None and event in ("created", "revoked") else None,
                 address=details.get("address") or request.remote_addr,
                 description=details.get("reason"))


# Registered once, when the module is first imported (the listeners are process-wide).
shares.add_listener(_audit_share)
