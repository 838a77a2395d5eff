"""Pytest fixtures for the facade app with a temporary database: ``app``, ``client``, ``auth``."""
from __future__ import annotations

import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from smart_flow import AuthActions  # noqa: E402

PUBLIC_URL = "http://127.0.0.1:8080"
FHIR_BASE = PUBLIC_URL + "/fhir"


@pytest.fixture
def app(tmp_path):
    """The facade built by the factory on a fresh SQLite database (tables created)."""
    from app import create_app
    from smart.admin.schema import init_db

    application = create_app({
        "TESTING": True,
        "FACADE_DATABASE_URL": f"sqlite:///{tmp_path}/facade.db",
        "FACADE_PUBLIC_URL": PUBLIC_URL,
        "FACADE_PACS_URL": "http://pacs.test/dicom-web",
    })
    with application.app_context():
        init_db()
    yield application
    application.extensions["smart_db"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(client):
    return AuthActions(client)
