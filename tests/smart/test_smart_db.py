"""The SQLite database file holds private signing keys: created owner-only."""
from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_sqlite_file_and_folder_are_owner_only(tmp_path, usual_umask):
    from app import create_app
    from smart.admin.schema import init_db

    path = tmp_path / "var" / "facade.db"
    app = create_app({"TESTING": True, "FACADE_DATABASE_URL": f"sqlite:///{path}"})
    with app.app_context():
        init_db()
    app.extensions["smart_db"].engine.dispose()
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600


def test_existing_folder_and_file_are_left_alone(tmp_path, usual_umask):
    from smart.store.db import create_database

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    path = folder / "facade.db"
    path.touch(mode=0o640)
    create_database(f"sqlite:///{path}").engine.dispose()
    assert mode(folder) == 0o750
    assert mode(path) == 0o640
