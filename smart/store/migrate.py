"""Schema migrations (Alembic): bring the facade's database to the latest revision, compare it with the models.

The revisions live in ``smart/store/migrations/versions`` (files Alembic loads, not a package:
the store layer's own history). Revision ``0001`` is the schema of the release before
migrations (``Base.metadata.create_all``); it creates only the tables that are missing, so a
database made by that release, which has no ``alembic_version`` table and may lack tables added
late (``smart_patient_access``), upgrades in place with its rows untouched.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from smart.store import models  # noqa: F401  (registers every table on Base.metadata)
from smart.store import audit_log  # noqa: F401  (the audit trail's table)
from smart.store.db import Base

#: Folder of ``env.py`` and ``versions/``.
MIGRATIONS = Path(__file__).with_name("migrations")

#: PostgreSQL advisory lock key held while migrating, so that two instances running
#: ``init-db`` at once migrate one after the other ("FACADEDB" in ASCII).
ADVISORY_LOCK = 0x4641434144454442


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` of the facade's migrations (no ``alembic.ini``).

    Parameters
    ----------
    connection : sqlalchemy.engine.Connection, optional
        The connection ``env.py`` migrates on.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The latest revision of the migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision *engine*'s database is at; None when it has no ``alembic_version``."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the database of *engine* to the latest revision (idempotent).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine

    Returns
    -------
    tuple
        The revision before (None for a new database or one made by ``create_all``) and after.

    Raises
    ------
    sqlalchemy.exc.OperationalError
        When the database cannot be reached.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(alembic_config(connection), "head")
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after


def schema_differences(engine: Engine) -> list:
    """What the database of *engine* lacks or has beyond the models (Alembic ``compare_metadata``).

    Returns
    -------
    list
        Alembic's diff tuples; empty when the schema matches ``Base.metadata`` exactly.
    """
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)
