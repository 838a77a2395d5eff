"""Database wiring: declarative Base, engine from FACADE_DATABASE_URL, a session per request.

Creating the tables (``init-db``) needs every table module, so it lives above them in :mod:`smart.admin.schema`."""
from __future__ import annotations

import os
from dataclasses import dataclass

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """Declarative base of every table the facade owns."""


@dataclass
class Database:
    """The engine and session factory of one Flask app (``app.extensions["smart_db"]``)."""

    engine: Engine
    sessionmaker: sessionmaker


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


def create_database(url: str) -> Database:
    """Create the engine and session factory for *url*.

    SQLite gets a busy timeout and foreign keys on, so concurrent dev-server threads
    wait for each other instead of failing with "database is locked".
    """
    _ensure_sqlite_file(url)
    kwargs: dict = {}
    if make_url(url).get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 15}
    engine = create_engine(url, **kwargs)
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
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()


def init_app(app: Flask) -> None:
    """Create *app*'s engine (no connection is opened yet) and register the session teardown."""
    app.extensions["smart_db"] = create_database(app.config["FACADE_DATABASE_URL"])
    app.teardown_appcontext(close_session)
