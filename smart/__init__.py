"""SMART on FHIR authorization server (SMART App Launch 2.x on Authlib).

Layers, lowest first (contracts in ``.importlinter``): ``scopes`` < ``store`` < ``tokens`` <
``authz`` < ``oauth`` < {``admin``, ``web``}; :mod:`smart.api` is the one module the facade
(``fhir_facade``) may import, and smart never imports the facade.
"""
from __future__ import annotations

import secrets

from flask import Flask, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.exc import IntegrityError

from smart.admin import audit_cli, cli, schema
from smart.audit import recorder as audit_recorder
from smart.audit import syslog as audit_syslog
from smart.oauth import cors, server
from smart.store import db
from smart.store.models import Setting
from smart.web import oidc  # noqa: F401  (registers the OpenID Connect routes on bp)
from smart.web import shares
from smart.web.routes import bp

#: Name of the persisted Flask SECRET_KEY in the ``smart_setting`` table.
SECRET_KEY_SETTING = "flask_secret_key"


def load_secret_key() -> str:
    """Return the persisted session signing key, generating and storing it on first use.

    Stored in the database so every worker and every restart share it. Never logged.
    """
    session = db.get_session()
    row = session.get(Setting, SECRET_KEY_SETTING)
    if row is None:
        session.add(Setting(name=SECRET_KEY_SETTING, value=secrets.token_urlsafe(48)))
        try:
            session.commit()
        except IntegrityError:  # another worker won the race
            session.rollback()
        row = session.get(Setting, SECRET_KEY_SETTING)
    return row.value


class PersistentKeySessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose key is loaded lazily from the database.

    The factory opens no connection, so the key is read at the first request that
    touches the session (by then ``init-db`` has created the table).
    """

    def get_signing_serializer(self, app: Flask):
        if not app.secret_key:
            try:
                app.secret_key = load_secret_key()
            except db.DATABASE_ERRORS as exc:
                # The view will meet the same outage and answer 503 in its protocol's shape;
                # here, outside any error handler, it would be a bare 500.
                db.unavailable(exc)
                return None
        return super().get_signing_serializer(app)

    def save_session(self, app: Flask, session, response) -> None:
        if self.get_signing_serializer(app) is None:
            return  # no key (database unavailable): the answer is a 503 that needs no session
        super().save_session(app, session, response)

    def open_session(self, app: Flask, request):
        """A new empty session when the request carries no session cookie.

        Only the login and consent pages use sessions; every FHIR and DICOMweb request
        would otherwise build a signing serializer (~0.05 ms) to find there is nothing to
        verify. A cookie, valid or not, is read as Flask reads it, except on the paths in
        ``app.config["SESSIONLESS_PATHS"]`` (the health checks, which must not need the database
        that holds the session key).
        """
        if not request.cookies.get(self.get_cookie_name(app)) or request.path in app.config.get(
                "SESSIONLESS_PATHS", ()):
            return self.session_class()
        return super().open_session(app, request) or self.session_class()


def _no_store(response):
    # RFC 6749 §5.1 / RFC 6750: token and auth pages must not be cached.
    if request.endpoint in cors.CLIENT_ENDPOINTS or request.endpoint in SESSION_ENDPOINTS:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def _unframeable(response):
    # Clickjacking: no page or redirect of the authorization server is framed, except a
    # prompt=none answer, which sets frame-ancestors to its client's origins (silent renew).
    if request.endpoint in SESSION_ENDPOINTS and "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["X-Frame-Options"] = "DENY"
    return response


#: Endpoints of the browser pages (login session, forms).
SESSION_ENDPOINTS = frozenset({"smart.authorize", "smart.end_session", "smart.apps"})


def database_error(exc: Exception):
    """Answer a database outage (:data:`smart.store.db.DATABASE_ERRORS`) outside the FHIR API and
    the DICOMweb proxy, which render their own, as OAuth error JSON: 503 ``temporarily_unavailable``
    (RFC 6749 §4.1.2.1) with ``Retry-After``."""
    error = db.unavailable(exc)
    response = jsonify({"error": "temporarily_unavailable", "error_description": error.description})
    response.status_code = error.status
    response.headers.update(error.headers())
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Register the database, the audit recorder, the authorization server, its routes and CLI on *app*."""
    db.init_app(app)
    audit_recorder.init_app(app, forward=audit_syslog.forwarding_logger(app.config.get("FACADE_AUDIT_SYSLOG")))
    for error_class in db.DATABASE_ERRORS:
        app.register_error_handler(error_class, database_error)
    app.cli.add_command(schema.init_db_command)
    server.init_app(app)
    if not app.config.get("SECRET_KEY"):
        app.session_interface = PersistentKeySessionInterface()
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if app.config["FACADE_PUBLIC_URL"].startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    if "smart" not in app.blueprints:
        app.register_blueprint(bp)
    if "shares" not in app.blueprints:
        app.register_blueprint(shares.bp)
    app.cli.add_command(cli.smart_cli)
    app.cli.add_command(audit_cli.audit_cli)


bp.after_request(cors.add_cors_headers)
bp.after_request(_no_store)
bp.after_request(_unframeable)
