"""Whether the facade's database answers: the readiness probe's database half (``GET /readyz``)."""
from __future__ import annotations

import logging

from flask import Flask, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from smart.store.db import get_database

log = logging.getLogger(__name__)


def database_ready(app: Flask | None = None) -> bool:
    """Whether the database of *app* (default: the current app) answers ``SELECT 1``.

    A connection is taken from the engine's pool (opened if the pool has none), the
    cheapest statement every SQL database answers is run, and the connection goes back.
    No table is read, so an uninitialised database is "reachable" too (``init-db`` is the
    operator's step, not the probe's).

    Parameters
    ----------
    app : flask.Flask, optional
        The application; the current one when omitted.

    Returns
    -------
    bool
        ``True`` when the statement answered, ``False`` on any database error (logged by
        its class name only: a driver's message can hold the URL and its password).
    """
    engine = get_database(app or current_app).engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("database not ready: %s", type(exc).__name__)
        return False
    return True
