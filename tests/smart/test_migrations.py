"""Schema migrations (issue 13 item 2) on SQLite and PostgreSQL: the migrated schema is the models'
schema, ``init-db`` is idempotent, a database of the release before migrations upgrades with its
client, user, refresh token, signing key and revoked token still working, a database at 0004 is
widened to 64-bit times and ids with its rows kept (0005), and a database never initialised is
named as such (admin commands and HTTP) instead of a traceback or a 500."""
from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path

import pytest
from db_helpers import BACKENDS
from facade_helpers import PUBLIC_URL
from joserfc import jwt
from joserfc.jwk import RSAKey
from smart_flow import AuthActions
from sqlalchemy import create_engine, inspect, text

DATA = Path(__file__).resolve().parent.parent / "data"
REDIRECT_URI = "http://127.0.0.1:9999/callback"
REFRESH_TOKEN = "legacy-refresh-token-0123456789abcdefghijklmnopqrstuv"
REVOKED_JTI = "legacy-revoked-jti"
EXP = 2000000000  # 2033: the schemas before revision 0005 hold no time after 2038 on PostgreSQL


@pytest.fixture(params=BACKENDS)
def empty_url(request, tmp_path) -> str:
    """A database with no tables at all: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgresql").create_database(f"t_{uuid.uuid4().hex[:12]}")
    return f"sqlite:///{tmp_path}/empty.db"


def make(url: str):
    from app import create_app
    return create_app({"TESTING": True, "FACADE_DATABASE_URL": url, "FACADE_PUBLIC_URL": PUBLIC_URL,
                       "FACADE_PACS_URL": "http://pacs.test/dicom-web", "SMART_REVOCATION_CACHE_SECONDS": 0})


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_the_migrated_schema_is_the_models_schema(empty_url):
    """Alembic's compare_metadata finds no difference after ``upgrade``: a table or column added
    to the models without a migration revision fails here."""
    from smart.store import migrate

    engine = create_engine(empty_url)
    try:
        assert migrate.upgrade(engine) == (None, migrate.head_revision())
        assert migrate.schema_differences(engine) == []
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_init_db_creates_then_leaves_the_schema_as_it_is(empty_url):
    from smart.store import migrate

    app = make(empty_url)
    first = cli(app, "init-db")
    assert first.exit_code == 0, first.output
    assert f"none -> {migrate.head_revision()}" in first.output
    assert cli(app, "smart", "add-user", "--username", "u1", "--password", "pw", "--patient", "P1").exit_code == 0
    again = cli(app, "init-db")
    assert again.exit_code == 0, again.output
    assert f"at the latest schema ({migrate.head_revision()})" in again.output
    with app.app_context():
        from smart.store.db import get_session
        from smart.store.models import SigningKey, User
        assert [u.username for u in get_session().query(User)] == ["u1"]
        assert get_session().query(SigningKey).count() == 1  # init-db again made no second key
    app.extensions["smart_db"].engine.dispose()


# --- a database of the release before migrations ------------------------------------------------

def _legacy_statements(backend: str, with_access_table: bool) -> list[str]:
    script = (DATA / f"schema-51fd46a.{backend}.sql").read_text()
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in body.split("\n;") if s.strip()]
    if not with_access_table:  # a release before the access lists (issue 12) had no such table
        statements = [s for s in statements if "smart_patient_access" not in s]
    return statements


def _legacy_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "legacy-kid", "use": "sig", "alg": "RS256"}, private=True)


def _legacy_token(key: RSAKey, jti: str) -> str:
    claims = {"iss": PUBLIC_URL, "sub": "olduser", "aud": PUBLIC_URL + "/fhir", "exp": EXP, "iat": 1700000000,
              "jti": jti, "client_id": "legacy-app", "scope": "patient/ImagingStudy.rs", "patient": "OLD-1"}
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, claims, key, algorithms=["RS256"])


def make_legacy_database(url: str, backend: str, key: RSAKey, with_access_table: bool = True) -> None:
    """The schema ``create_all`` made at 51fd46a (no ``alembic_version``), holding a public client,
    a patient user, a refresh token of theirs, a signing key and a revoked access token, written
    with plain SQL as that release stored them."""
    from werkzeug.security import generate_password_hash

    from smart.store.models import digest

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in _legacy_statements(backend, with_access_table):
                connection.execute(text(statement))
            connection.execute(text(
                "INSERT INTO smart_client (client_id, client_name, redirect_uris, token_endpoint_auth_method, "
                "grant_types, created_at) VALUES ('legacy-app', 'Legacy', :uris, 'none', :grants, 1700000000)"),
                {"uris": json.dumps([REDIRECT_URI]), "grants": json.dumps(["authorization_code", "refresh_token"])})
            connection.execute(text(
                "INSERT INTO smart_user (username, password_hash, patient, role) "
                "VALUES ('olduser', :hash, 'OLD-1', 'patient')"), {"hash": generate_password_hash("old-password")})
            connection.execute(text(
                "INSERT INTO smart_refresh_token (token_hash, client_id, user_id, scope, context, issued_at) "
                "VALUES (:hash, 'legacy-app', 1, :scope, :context, 1700000000)"),
                {"hash": digest(REFRESH_TOKEN), "scope": "launch/patient patient/ImagingStudy.rs offline_access",
                 "context": json.dumps({"patient": "OLD-1"})})
            connection.execute(text(
                "INSERT INTO smart_signing_key (kid, private_jwk, alg, created_at) VALUES (:kid, :jwk, 'RS256', 1)"),
                {"kid": key.kid, "jwk": json.dumps(key.as_dict(private=True))})
            connection.execute(text("INSERT INTO smart_revoked_token (jti, exp) VALUES (:jti, :exp)"),
                               {"jti": REVOKED_JTI, "exp": EXP})
    finally:
        engine.dispose()


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


@pytest.mark.parametrize("with_access_table", [True, False], ids=["51fd46a", "before-access-lists"])
def test_a_database_of_the_release_before_migrations_upgrades_with_no_loss(empty_url, with_access_table):
    from smart.store import migrate

    backend = "postgresql" if empty_url.startswith("postgresql") else "sqlite"
    key = _legacy_key()
    make_legacy_database(empty_url, backend, key, with_access_table)
    app = make(empty_url)
    result = cli(app, "init-db")
    assert result.exit_code == 0, result.output
    assert f"schema none -> {migrate.head_revision()}" in result.output
    engine = app.extensions["smart_db"].engine
    assert migrate.schema_differences(engine) == []
    client = app.test_client()

    # The refresh token still refreshes, for its user and patient, signed by the kept key.
    refreshed = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN,
                                                 "client_id": "legacy-app"})
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    answer = refreshed.get_json()
    assert answer["patient"] == "OLD-1"
    assert _kid(answer["access_token"]) == "legacy-kid"

    # The revoked token stays revoked; a token of the same key with another jti is active.
    def introspect(value):
        response = client.post("/auth/introspect", data={"token": value},
                               headers={"Authorization": f"Bearer {answer['access_token']}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["active"]

    assert introspect(_legacy_token(key, REVOKED_JTI)) is False
    assert introspect(_legacy_token(key, "legacy-other-jti")) is True

    # The client and the user still log in and consent (a standalone launch).
    auth = AuthActions(client)
    code = auth.authorize("olduser", "old-password", client_id="legacy-app", redirect_uri=REDIRECT_URI,
                          scope="launch/patient patient/ImagingStudy.rs")
    token = auth.exchange(code, client_id="legacy-app", redirect_uri=REDIRECT_URI)
    assert token["patient"] == "OLD-1"

    # The access lists work on the upgraded database (the table was created if missing).
    granted = cli(app, "smart", "add-user", "--username", "dr", "--password", "pw", "--role", "practitioner")
    assert granted.exit_code == 0, granted.output
    assert cli(app, "smart", "grant-access", "--username", "dr", "--patient", "OLD-1").output == "dr may see: OLD-1.\n"
    engine.dispose()


# --- a database never initialised ---------------------------------------------------------------

def test_admin_commands_on_a_database_never_initialised_name_init_db(empty_url):
    app = make(empty_url)
    for args in (("smart", "add-client", "--client-id", "c", "--redirect-uri", REDIRECT_URI, "--public"),
                 ("smart", "add-user", "--username", "u", "--password", "p", "--patient", "P1"),
                 ("smart", "rotate-key"),
                 ("smart", "grant-access", "--username", "u", "--patient", "P1")):
        result = cli(app, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "flask --app app init-db" in result.output
        assert "Traceback" not in result.output
    assert inspect(app.extensions["smart_db"].engine).get_table_names() == []  # nothing half-written
    app.extensions["smart_db"].engine.dispose()


def test_requests_on_a_database_never_initialised_are_503_in_each_protocol(empty_url, caplog):
    app = make(empty_url)
    client = app.test_client()
    caplog.set_level(logging.ERROR, logger="smart.store.db")
    # A well-formed token of a key the empty database does not hold: verifying it needs the database.
    key = _legacy_key()
    bearer = {"Authorization": "Bearer " + _legacy_token(key, "j1")}
    answers = {
        "token": client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x",
                                                  "client_id": "c"}),
        "fhir": client.get("/fhir/ImagingStudy?patient=P1", headers=bearer),
        "dicomweb": client.get("/dicomweb/studies/1.2.3", headers=bearer),
        "jwks": client.get("/.well-known/jwks.json"),
    }
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.get_data(as_text=True))
        assert response.headers["Retry-After"] == "5", name
        assert "flask --app app init-db" in response.get_data(as_text=True), name
    assert answers["token"].get_json()["error"] == "temporarily_unavailable"
    assert answers["jwks"].get_json()["error"] == "temporarily_unavailable"
    assert answers["fhir"].get_json()["resourceType"] == "OperationOutcome"
    assert answers["fhir"].get_json()["issue"][0]["code"] == "transient"
    assert answers["dicomweb"].get_json() == {"status": 503, "message": answers["dicomweb"].get_json()["message"]}
    outages = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(outages) == 1, [r.getMessage() for r in outages]  # logged once, not per request
    assert "init-db" in outages[0].getMessage()
    app.extensions["smart_db"].engine.dispose()


# --- revision 0005: times after 2038, ids beyond 2**31 - 1 -----------------------------------------

YEAR_2100 = 4102444800  # 2100-01-01T00:00:00Z
LAST_32_BIT = 2**31 - 1  # 2038-01-19T03:14:07Z, the last second a PostgreSQL INTEGER holds


def _revision_0005():
    from alembic.script import ScriptDirectory

    from smart.store import migrate
    return ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0005").module


def _postgresql_types(connection) -> tuple[dict, dict]:
    """information_schema's data_type of every column altered by 0005, and of their tables' sequences."""
    module = _revision_0005()
    columns = {(table, column): None for table, names in module.TIMESTAMPS.items() for column in names}
    columns.update({(table, column): None for table, column in module.ROW_IDS.items()})
    for table, column, data_type in connection.execute(text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'")):
        if (table, column) in columns:
            columns[table, column] = data_type
    sequences = dict(connection.execute(text(
        "SELECT sequence_name, data_type FROM information_schema.sequences WHERE sequence_schema = 'public' "
        "AND sequence_name IN ('facade_audit_event_id_seq', 'smart_login_attempt_id_seq')")).all())
    return columns, sequences


def _assert_postgresql_types(engine, data_type: str) -> None:
    with engine.connect() as connection:
        columns, sequences = _postgresql_types(connection)
    assert len(columns) == 26
    assert set(columns.values()) == {data_type}, columns
    assert sequences == {"facade_audit_event_id_seq": data_type, "smart_login_attempt_id_seq": data_type}


#: Rows of a database at 0004, by table: (columns, values) in plain SQL as that schema stores them.
ROWS_AT_0004 = {
    "smart_client": "(client_id, redirect_uris, token_endpoint_auth_method, grant_types, created_at) "
                    "VALUES ('c-0004', '[]', 'none', '[\"refresh_token\"]', 1700000000)",
    "smart_user": "(username, password_hash, patient, role) VALUES ('u-0004', 'x', 'P-0004', 'patient')",
    "smart_refresh_token": "(token_hash, client_id, user_id, scope, context, issued_at, expires_at, revoked_at) "
                           f"VALUES ('{'a' * 64}', 'c-0004', 1, 'online_access', '{{}}', 1700000000, "
                           f"{LAST_32_BIT}, NULL)",
    "smart_revoked_token": f"(jti, exp) VALUES ('jti-0004', {LAST_32_BIT})",
    "smart_share_link": "(id, secret_hash, patient, study, created_by, created_at, expires_at, last_used_at, uses) "
                        f"VALUES ('s-0004', '{'b' * 64}', 'P-0004', 'all', 'u-0004', 1700000000, {EXP}, "
                        "1700000100, 3)",
    "smart_login_attempt": "(username, address, at) VALUES ('u-0004', '127.0.0.1', 1700000200)",
    "facade_audit_event": "(event_id, recorded, type, subtype, action, outcome, patient, resource) "
                          f"VALUES ('{'c' * 32}', 1700000300.5, 'rest', 'read', 'R', '0', 'P-0004', '{{}}')",
}


def _rows(engine) -> dict:
    """Every row of :data:`ROWS_AT_0004`'s tables, as tuples, in id order."""
    with engine.connect() as connection:
        return {table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
                for table in ROWS_AT_0004}


def test_revision_0005_widens_a_database_at_0004_and_keeps_its_rows(empty_url):
    """On PostgreSQL the 26 columns (and the two id sequences) go INTEGER -> BIGINT -> INTEGER ->
    BIGINT with the rows unchanged; on SQLite nothing changes; the schema is the models' on both.
    Then a time of 2100 and an id beyond 2**31 - 1 are written, and PostgreSQL refuses to go back."""
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    from smart.store import migrate

    postgres = empty_url.startswith("postgresql")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrate.alembic_config(connection), "0004")
            for table, values in ROWS_AT_0004.items():
                connection.execute(text(f"INSERT INTO {table} {values}"))
        before = _rows(engine)
        assert before["smart_refresh_token"][0][7] == LAST_32_BIT
        if postgres:
            _assert_postgresql_types(engine, "integer")

        assert migrate.upgrade(engine) == ("0004", migrate.head_revision())
        assert migrate.schema_differences(engine) == []
        assert _rows(engine) == before
        if postgres:
            _assert_postgresql_types(engine, "bigint")

        with engine.begin() as connection:
            command.downgrade(migrate.alembic_config(connection), "0004")
        assert _rows(engine) == before
        if postgres:
            _assert_postgresql_types(engine, "integer")
        assert migrate.upgrade(engine) == ("0004", migrate.head_revision())

        # What did not fit now does: an expiry in 2100, an audit id past 2**31 - 1 from the sequence.
        with engine.begin() as connection:
            connection.execute(text("UPDATE smart_share_link SET expires_at = :t"), {"t": YEAR_2100})
            if postgres:
                connection.execute(text("SELECT setval('facade_audit_event_id_seq', :id)"), {"id": LAST_32_BIT})
            else:
                connection.execute(text("UPDATE facade_audit_event SET id = :id"), {"id": LAST_32_BIT})
            connection.execute(text(f"INSERT INTO facade_audit_event {ROWS_AT_0004['facade_audit_event']}"
                                    .replace("c" * 32, "d" * 32)))
            assert connection.execute(text("SELECT max(id) FROM facade_audit_event")).scalar() == 2**31
            assert connection.execute(text("SELECT expires_at FROM smart_share_link")).scalar() == YEAR_2100

        if postgres:  # such a database cannot go back to 32 bits: the downgrade fails whole
            with pytest.raises(DBAPIError, match="out of range"), engine.begin() as connection:
                command.downgrade(migrate.alembic_config(connection), "0004")
            assert migrate.current_revision(engine) == migrate.head_revision()
            _assert_postgresql_types(engine, "bigint")
    finally:
        engine.dispose()


def test_a_database_create_all_made_from_the_current_models_upgrades_to_the_same_schema(empty_url):
    """No ``alembic_version``, every column BIGINT already (PostgreSQL): 0001-0005 leave it as it is."""
    from smart.store import migrate
    from smart.store.db import Base

    engine = create_engine(empty_url)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(text(f"INSERT INTO facade_audit_event {ROWS_AT_0004['facade_audit_event']}"))
        assert migrate.upgrade(engine) == (None, migrate.head_revision())
        assert migrate.schema_differences(engine) == []
        if empty_url.startswith("postgresql"):
            _assert_postgresql_types(engine, "bigint")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, recorded FROM facade_audit_event")).all() == [(1, 1700000300.5)]
    finally:
        engine.dispose()
