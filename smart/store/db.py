"""Database wiring: declarative Base, engine from FACADE_DATABASE_URL, a session per request.

Creating the tables (``init-db``) needs every table module, so it lives above them in :mod:`smart.admin.schema`."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)

#: The command that creates or upgrades the schema (named by every "not initialised" message).
INIT_DB_COMMAND = "flask --app app init-db"

#: Seconds a client is told to wait (``Retry-After``) when the database is unreachable.
RETRY_AFTER_SECONDS = 5

#: Pool settings of a server database, by Flask config key -> ``create_engine`` argument.
POOL_SETTINGS = {
    "FACADE_DB_POOL_SIZE": "pool_size",
    "FACADE_DB_MAX_OVERFLOW": "max_overflow",
    "FACADE_DB_POOL_RECYCLE": "pool_recycle",
    "FACADE_DB_POOL_TIMEOUT": "pool_timeout",
}

#: Seconds psycopg waits for a TCP connection to PostgreSQL (a dead host must not hang requests).
CONNECT_TIMEOUT = 5

#: SQLAlchemy errors that mean "the database cannot serve now" (down, unreachable, pool
#: exhausted, schema missing); others (integrity, data) are bugs and stay 500s.
DATABASE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError,
                   sa_exc.InternalError, sa_exc.TimeoutError, sa_exc.DisconnectionError)


class Base(DeclarativeBase):
    """Declarative base of every table the facade owns."""


@dataclass
class Database:
    """The engine and session factory of one Flask app (``app.extensions["smart_db"]``)."""

    engine: Engine
    sessionmaker: sessionmaker
    #: Set while an outage has been logged, so that it is logged once, not on every request.
    outage_logged: threading.Event = field(default_factory=threading.Event)


class DatabaseUnavailable(Exception):
    """The facade's database cannot serve this request: unreachable, or never initialised.

    Answered 503 with ``Retry-After`` in each protocol's shape (FHIR OperationOutcome, OAuth
    error JSON, DICOMweb error); an admin command prints :attr:`description` and exits 1.

    Parameters
    ----------
    uninitialised : bool
        True when the schema is missing (the fix is :data:`INIT_DB_COMMAND`), False when the
        database is down or unreachable (the fix is to wait).
    """

    status = 503

    def __init__(self, uninitialised: bool = False):
        self.uninitialised = uninitialised
        if uninitialised:
            self.description = f"The database is not initialised or its schema is out of date: run `{INIT_DB_COMMAND}`."
        else:
            self.description = "The database is unavailable; try again later."
        super().__init__(self.description)

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (RFC 9110 Section 10.2.3) for a 503 answer."""
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _missing_table(exc: Exception) -> bool:
    """Whether the DBAPI error *exc* says a table or column does not exist: a schema never
    created, or older than the code (SQLite's messages; PostgreSQL SQLSTATE 42P01, 42703)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("42P01", "42703"):
        return True
    message = str(orig or exc).lower()
    return "no such table" in message or "no such column" in message


def unavailable(exc: BaseException, log_outage: bool = True) -> DatabaseUnavailable:
    """Classify a SQLAlchemy error of :data:`DATABASE_ERRORS` as a :class:`DatabaseUnavailable`.

    Parameters
    ----------
    exc : BaseException
        The SQLAlchemy error.
    log_outage : bool
        Log the first of a run of outages, once until a request succeeds again: the error's
        class and first line only (SQLAlchemy's own message holds the statement's parameters).
    """
    error = DatabaseUnavailable(uninitialised=_missing_table(exc))
    if not log_outage:
        return error
    try:
        database = get_database()
    except (RuntimeError, KeyError):
        database = None
    if database is None or not database.outage_logged.is_set():
        if database is not None:
            database.outage_logged.set()
        orig = getattr(exc, "orig", None) or exc
        first_line = (str(orig).strip().splitlines() or [""])[0][:200]
        log.error("database unavailable (%s: %s); %s", type(orig).__name__, first_line,
                  f"run `{INIT_DB_COMMAND}`" if error.uninitialised else "answering 503 until it is back")
    try:
        g.db_failed = True
        session = g.get("db_session")
    except RuntimeError:  # no app context
        return error
    if session is not None:
        # PostgreSQL refuses every later statement of a failed transaction: end it, so that
        # what still runs in this request (saving the session cookie) meets the outage itself.
        try:
            session.rollback()
        except DATABASE_ERRORS:
            pass
    return error


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL of *url*, a ``postgresql://`` one on psycopg 3.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which the facade does not ship;
    ``postgresql://`` and ``postgres://`` (Heroku style) mean psycopg 3 here.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _ensure_sqlite_file(url: str) -> None:
    """Create a file-based SQLite database owner-only, with its folder if missing.

    The file holds the private signing keys and client secrets' hashes, so a new folder is
    created 0700 and a new file 0600 (SQLite gives its journal and WAL files the database
    file's permissions). An existing folder or file is left as the administrator set it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = os.path.abspath(database)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # makedirs' mode is filtered by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)
    os.close(fd)


def create_database(url: str, pool: dict | None = None) -> Database:
    """Create the engine and session factory for *url*.

    SQLite gets a busy timeout and foreign keys on, so concurrent dev-server threads
    wait for each other instead of failing with "database is locked". A server database
    (PostgreSQL) gets a checked pool: every connection is pinged when taken from the pool
    (``pool_pre_ping``), so a restarted server costs no failed request, and replaced after
    ``pool_recycle`` seconds.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``FACADE_DATABASE_URL``); ``postgresql://`` uses psycopg 3.
    pool : dict, optional
        ``create_engine`` pool arguments (``pool_size``, ``max_overflow``, ``pool_recycle``,
        ``pool_timeout``) for a server database; ignored for SQLite.
    """
    _ensure_sqlite_file(url)
    parsed = engine_url(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 15}
    else:
        kwargs.update(pool or {}, pool_pre_ping=True)
        if parsed.get_driver_name() == "psycopg":
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return Database(engine, sessionmaker(engine, expire_on_commit=False))


def get_database(app: Flask | None = None) -> Database:
    """Return the :class:`Database` of *app* (default: the current app)."""
    return (app or current_app).extensions["smart_db"]


def get_session() -> Session:
    """Return this request's (or app context's) session, created on first use and
    closed at teardown."""
    if "db_session" not in g:
        g.db_session = get_database().sessionmaker()
    return g.db_session


def close_session(exc: BaseException | None = None) -> None:
    """Close the context's session; roll back whatever was left uncommitted."""
    session = g.pop("db_session", None)
    failed = g.pop("db_failed", False)
    if session is not None:
        try:
            if exc is not None:
                session.rollback()
            session.close()
        except DATABASE_ERRORS:  # the connection died with the server: nothing left to undo
            failed = True
        if not failed:
            get_database().outage_logged.clear()


def init_app(app: Flask) -> None:
    """Create *app*'s engine (no connection is opened yet) and register the session teardown."""
    pool = {argument: app.config[key] for key, argument in POOL_SETTINGS.items() if app.config.get(key) is not None}
    app.extensions["smart_db"] = create_database(app.config["FACADE_DATABASE_URL"], pool)
    app.teardown_appcontext(close_session)
