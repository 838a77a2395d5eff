"""The authorization server's tests run on SQLite and on PostgreSQL: its state is the database."""
from __future__ import annotations

import pytest
from db_helpers import BACKENDS, backend_url


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> str:
    """An empty facade database, once on SQLite and once on PostgreSQL."""
    return backend_url(request, tmp_path)
