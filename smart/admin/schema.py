"""Creating the facade's database (``flask --app app init-db``): every table, and a signing key."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from smart.store import models  # noqa: F401  (models registers the tables on Base)
from smart.store import audit_log  # noqa: F401  (the audit trail's table)
from smart.store.db import Base, get_database
from smart.tokens import keys


def init_db() -> None:
    """Create every table that does not exist yet and make sure a signing key exists.

    Needs an app context. Safe to run again on an existing database.
    """
    Base.metadata.create_all(get_database().engine)
    keys.current_signing_key()


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the facade's database tables (idempotent)."""
    init_db()
    click.echo("Initialized the database.")
