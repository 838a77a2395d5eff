"""Creating or upgrading the facade's database (``flask --app app init-db``), and admin commands
that say so, without a traceback, when the database is not initialised or cannot be reached."""
from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext

from smart.store import migrate
from smart.store.db import DATABASE_ERRORS, get_database, unavailable
from smart.tokens import keys


def init_db() -> tuple[str | None, str]:
    """Create the schema or upgrade it to the latest revision, and make sure a signing key exists.

    Needs an app context. Safe to run again: a database at the head is left as it is; one made
    by ``create_all`` before migrations existed is upgraded in place (:mod:`smart.store.migrate`).

    Returns
    -------
    tuple
        The schema revision before (None: a new database, or one without migrations) and after.

    Raises
    ------
    sqlalchemy.exc.OperationalError
        When the database cannot be reached.
    """
    revisions = migrate.upgrade(get_database().engine)
    keys.current_signing_key()
    return revisions


def database_error_message(exc: BaseException) -> str:
    """What an admin command prints for a database error of :data:`DATABASE_ERRORS`."""
    error = unavailable(exc, log_outage=False)
    if error.uninitialised:
        return error.description
    url = get_database().engine.url.render_as_string(hide_password=True)
    return f"cannot reach the database {url}; is it running? ({type(getattr(exc, 'orig', exc)).__name__})"


class DatabaseGroup(AppGroup):
    """A Flask CLI group whose commands print a database that is down or never initialised as an
    error naming the fix (``init-db``), exit status 1, instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DATABASE_ERRORS as exc:
            raise click.ClickException(database_error_message(exc)) from None


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the facade's database or upgrade it to the latest schema (idempotent)."""
    try:
        before, after = init_db()
    except DATABASE_ERRORS as exc:
        raise click.ClickException(database_error_message(exc)) from None
    url = get_database().engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"The database is at the latest schema ({after}): {url}")
    else:
        click.echo(f"Initialized the database: schema {before or 'none'} -> {after}: {url}")
