"""Databases for the tests: a fresh SQLite file or the session's PostgreSQL emptied, by backend name."""
from __future__ import annotations

import pytest

#: The `database_url` parameters of modules that run on SQLite and PostgreSQL.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgresql, pytest.mark.integration])]


def empty_postgresql_database(cluster) -> str:
    """The URL of *cluster*'s facade database at the head revision, emptied of rows.

    The tables are emptied (TRUNCATE); a schema a test changed (a table dropped, to play an old
    release) is dropped and migrated afresh.
    """
    from sqlalchemy import create_engine, text

    from smart.store import migrate
    from smart.store.db import Base

    wanted = set(Base.metadata.tables) | {"alembic_version"}
    engine = create_engine(cluster.url)
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            tables = set(connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
            if tables == wanted:
                connection.execute(text(f"TRUNCATE TABLE {', '.join(sorted(tables - {'alembic_version'}))} "
                                        "RESTART IDENTITY CASCADE"))
            else:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
        if tables != wanted:
            migrate.upgrade(engine)
    finally:
        engine.dispose()
    return cluster.url


def backend_url(request, tmp_path) -> str:
    """A fresh database of the backend named by ``request.param`` (default SQLite)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return empty_postgresql_database(request.getfixturevalue("postgresql"))
    return f"sqlite:///{tmp_path}/facade.db"


