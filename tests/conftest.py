"""The tests' one fixture system: the facade apps (``app``, ``client``, ``auth``, ``fake_app``) and
the throwaway Orthanc PACS with the sample studies.

``scripts/`` and ``tests/`` are on the import path through pytest.ini's ``pythonpath``; plain
helpers (tokens, requests, DICOM JSON builders) live in modules the tests import by name.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

# ---------------------------------------------------------------------------
# Dev PACS (scripts/devpacs.py, scripts/samples.py)
#
# `orthanc` is session-scoped and lazy: only tests that ask for it start
# Orthanc, and such tests are marked `integration` automatically, so
# `pytest -m "not integration"` runs without a PACS. Set FACADE_TEST_PACS_URL
# to an already running Orthanc REST root to reuse it instead of starting one.
# ---------------------------------------------------------------------------


@dataclass
class PACS:
    """A running Orthanc with the samples loaded, as the `orthanc` fixture yields it.

    Attributes
    ----------
    url : str
        Orthanc REST root, e.g. ``http://127.0.0.1:40123``.
    dicomweb_url : str
        DICOMweb base, ``url + "/dicom-web"`` (what ``FACADE_PACS_URL`` points at).
    samples : dict
        Summary returned by ``samples.load_samples``: ``samples["demo"]
        ["StudyInstanceUID"]``, ``samples["sha256"][SOPInstanceUID]``, ...
    process : devpacs.Orthanc or None
        The process this session started; None for ``FACADE_TEST_PACS_URL``.
    """

    url: str
    dicomweb_url: str
    samples: dict = field(repr=False)
    process: object = None


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[PACS]:
    """Orthanc with the DICOMweb plugin and the samples loaded, for the whole session.

    Starts a throwaway Orthanc on a free loopback port in a temporary folder
    (or uses ``FACADE_TEST_PACS_URL``), stores pydicom's sample files and the
    generated demo study, and stops Orthanc when the session ends.
    """
    import devpacs
    import samples

    external = os.environ.get("FACADE_TEST_PACS_URL", "").strip()
    if external:
        url = devpacs.rest_root(external)
        yield PACS(url=url, dicomweb_url=url + "/dicom-web", samples=samples.load_samples(url))
        return
    devpacs.ensure_installed()
    with devpacs.Orthanc(tmp_path_factory.mktemp("orthanc")) as process:
        summary = samples.load_samples(process.url)
        yield PACS(
            url=process.url,
            dicomweb_url=process.dicomweb_url,
            samples=summary,
            process=process,
        )


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the `orthanc` fixture as `integration`."""
    for item in items:
        if {"orthanc", "encoded_pacs"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- end dev PACS


@pytest.fixture(scope="session", params=["Utf8", "Latin1"])
def encoded_pacs(request, tmp_path_factory) -> Iterator[PACS]:
    """An empty Orthanc answering QIDO-RS in UTF-8, then one in Latin-1, for the identity tests.

    Orthanc's ``DefaultEncoding`` decides the character set of its search answers; with
    ``Latin1`` (its own default) they silently lose every character ISO_IR 100 lacks.
    The facade must keep patients apart with either (issue 11). Skipped when the tests
    run against an external PACS (``FACADE_TEST_PACS_URL``): its encoding is not ours to set.
    """
    import devpacs

    if os.environ.get("FACADE_TEST_PACS_URL", "").strip():
        pytest.skip("the identity tests start PACS of their own")
    devpacs.ensure_installed()
    with devpacs.Orthanc(tmp_path_factory.mktemp(f"orthanc-{request.param}"), encoding=request.param) as process:
        yield PACS(url=process.url, dicomweb_url=process.dicomweb_url, samples={}, process=process)


# --------------------------------------------------------------------------- the database
#
# SQLite (a file in the test's tmp_path) by default. Test modules whose subject is the
# database (tests/smart/) run on both backends: their conftest parametrizes `database_url`
# with BACKENDS. PostgreSQL is one throwaway cluster for the session (scripts/devpg.py); each
# test gets the facade's database emptied (TRUNCATE), not a new cluster.

@pytest.fixture(scope="session")
def postgresql():
    """A throwaway PostgreSQL cluster (Debian's binaries, installed when missing) for the session."""
    import devpg

    devpg.ensure_installed()
    with devpg.PostgreSQL() as cluster:
        yield cluster


@pytest.fixture
def database_url(request, tmp_path) -> str:
    """URL of an empty facade database for one test: SQLite here, parametrized with
    :data:`db_helpers.BACKENDS` where a module runs on both backends."""
    from db_helpers import backend_url
    return backend_url(request, tmp_path)


# --------------------------------------------------------------------------- the facade

@pytest.fixture
def app(database_url):
    """The facade built by the factory on a fresh database (tables created), its PACS
    an address nothing answers at (fake it with ``responses``)."""
    from app import create_app
    from facade_helpers import PUBLIC_URL
    from smart.admin.schema import init_db

    application = create_app({
        "TESTING": True,
        "FACADE_DATABASE_URL": database_url,
        "FACADE_PUBLIC_URL": PUBLIC_URL,
        "FACADE_PACS_URL": "http://pacs.test/dicom-web",
    })
    with application.app_context():
        init_db()
    yield application
    application.extensions["smart_db"].engine.dispose()


@pytest.fixture
def client(app):
    """A test client of :func:`app`."""
    return app.test_client()


@pytest.fixture
def auth(client):
    """The multi-step SMART flows (register, log in, consent, exchange) on :func:`client`."""
    from smart_flow import AuthActions
    return AuthActions(client)


@pytest.fixture
def fake_app(tmp_path):
    """The facade on ``facade_helpers.FAKE_PACS`` (fake it with ``responses``), public at ``PUBLIC``."""
    from facade_helpers import make_app
    return make_app(tmp_path)
