"""``init-db`` on PostgreSQL migrates under an advisory lock (issue 13): two instances started at
once migrate one after the other. Proven by holding the lock here: the migration waits for it,
then completes once it is released."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from smart.store.migrate import ADVISORY_LOCK, head_revision, upgrade

pytestmark = [pytest.mark.postgresql, pytest.mark.integration]


def test_init_db_waits_for_the_advisory_lock_then_migrates(postgresql):
    url = postgresql.create_database(f"t_{uuid.uuid4().hex[:12]}")
    holder, migrating = create_engine(url), create_engine(url)
    outcome: dict = {}

    def migrate() -> None:
        try:
            outcome["revisions"] = upgrade(migrating)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    try:
        with holder.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK})
            worker = threading.Thread(target=migrate, daemon=True)
            worker.start()
            worker.join(2.0)
            assert worker.is_alive(), f"init-db did not wait for the lock: {outcome}"
            assert "alembic_version" not in inspect(holder).get_table_names()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK})
            connection.commit()
        worker.join(60)
        assert not worker.is_alive()
        assert outcome.get("revisions") == (None, head_revision()), outcome
        # The second instance, after the first: nothing left to do.
        assert upgrade(create_engine(url)) == (head_revision(), head_revision())
    finally:
        holder.dispose()
        migrating.dispose()
