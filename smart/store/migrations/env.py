"""Alembic environment of the facade's schema: run on the connection :mod:`smart.store.migrate` hands over.

There is no ``alembic.ini``: ``flask --app app init-db`` runs the migrations, on the app's
engine, through :func:`smart.store.migrate.upgrade`.
"""
from alembic import context

from smart.store import models  # noqa: F401  (registers every table on Base.metadata)
from smart.store import audit_log  # noqa: F401  (the audit trail's table)
from smart.store.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it (Alembic's batch mode); PostgreSQL alters in place.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
