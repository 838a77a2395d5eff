"""Times after 2038-01-19 03:14:07 UTC (2**31 - 1 epoch seconds) and row ids beyond 2**31 - 1, on
SQLite and PostgreSQL (smart/store/columns.py): a share link, a refresh token, a revoked token, an
audit event and a failed login of 2100 are stored and read back exactly, over HTTP where a route
writes them."""
from __future__ import annotations

from facade_helpers import bearer, token
from sqlalchemy import BigInteger, Integer, select
from sqlalchemy.dialects import postgresql, sqlite

#: 2100-01-01T00:00:00Z.
YEAR_2100 = 4102444800
#: Beyond PostgreSQL's INTEGER.
BIG_ID = 2**31 + 7

#: Names of the epoch-second columns (every table, now and later).
TIMESTAMP_NAMES = ("at", "exp", "auth_time")


def _timestamp_columns() -> list:
    from smart.store import migrate  # noqa: F401  (registers every table, the audit trail's too)
    from smart.store.db import Base
    return [column for table in Base.metadata.sorted_tables for column in table.columns
            if column.name in TIMESTAMP_NAMES or column.name.endswith("_at")]


def test_every_timestamp_column_is_bigint_on_postgresql_and_integer_on_sqlite():
    """A timestamp column added later as ``Integer`` fails here (it would stop in 2038)."""
    columns = _timestamp_columns()
    assert len(columns) >= 24  # the 24 of revision 0005, and any added since
    for column in columns:
        assert isinstance(column.type.dialect_impl(postgresql.dialect()), BigInteger), column
        # INTEGER affinity, 8 bytes: the declared type of every database made so far.
        assert type(column.type.dialect_impl(sqlite.dialect())) is Integer, column


def test_the_audit_and_login_attempt_ids_are_bigserial_on_postgresql_and_the_rowid_on_sqlite():
    from sqlalchemy.schema import CreateTable

    from smart.store.audit_log import AuditRecord
    from smart.store.models import LoginAttempt

    for model in (AuditRecord, LoginAttempt):
        assert "id BIGSERIAL NOT NULL" in str(CreateTable(model.__table__).compile(dialect=postgresql.dialect()))
        assert "id INTEGER NOT NULL" in str(CreateTable(model.__table__).compile(dialect=sqlite.dialect()))


def test_a_share_link_expiring_in_2100_is_made_and_listed_with_its_expiry(app):
    """``POST /auth/shares`` of a life reaching 2100 (the operator allows that long): 201, and the
    expiry it answered is the one listed and stored."""
    from smart.store.db import get_session
    from smart.store.models import ShareLink, now

    app.config["FACADE_SHARE_MAX_SECONDS"] = 100 * 365 * 86400
    client, patient = app.test_client(), bearer(token(app, patient="P1", fhir_user="Patient/P1"))
    made = client.post("/auth/shares", json={"study": "all", "expires_in": YEAR_2100 - now()}, headers=patient)
    assert made.status_code == 201, made.get_data(as_text=True)
    share_id, expires_at = made.get_json()["id"], made.get_json()["expires_at"]
    assert expires_at - YEAR_2100 in (0, 1)  # now() may have turned a second since the request was built
    listed = client.get("/auth/shares", headers=patient)
    assert listed.status_code == 200, listed.get_data(as_text=True)
    assert [(s["id"], s["expires_at"], s["expired"]) for s in listed.get_json()["shares"]] == [
        (share_id, expires_at, False)]
    with app.app_context():
        assert get_session().get(ShareLink, share_id).expires_at == expires_at


def test_a_refresh_token_expiring_in_2100_refreshes_into_one_expiring_then(app):
    """An ``online_access`` refresh token rotates into one of the same expiry: written in 2100."""
    from smart.store.db import get_session
    from smart.store.models import Client, RefreshToken, User, digest, now

    with app.app_context():
        session = get_session()
        user = User(username="far", patient="P1")
        user.set_password("pw")
        session.add_all([Client(client_id="far-app", redirect_uris=["http://127.0.0.1:9999/cb"],
                                token_endpoint_auth_method="none", grant_types=["refresh_token"]), user])
        session.flush()
        session.add(RefreshToken(token_hash=digest("far-refresh-token"), client_id="far-app", user_id=user.id,
                                 scope="launch/patient patient/ImagingStudy.rs online_access",
                                 context={"patient": "P1"}, issued_at=now(), expires_at=YEAR_2100))
        session.commit()
    answer = app.test_client().post("/auth/token", data={"grant_type": "refresh_token", "client_id": "far-app",
                                                         "refresh_token": "far-refresh-token"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    renewed = answer.get_json()["refresh_token"]
    assert renewed != "far-refresh-token"
    with app.app_context():
        rows = get_session().scalars(select(RefreshToken).order_by(RefreshToken.id)).all()
        assert [(r.token_hash, r.expires_at) for r in rows] == [
            (digest("far-refresh-token"), YEAR_2100), (digest(renewed), YEAR_2100)]


def test_an_access_token_expiring_in_2100_is_revoked_until_then(app):
    """``POST /auth/revoke`` keeps the token's ``jti`` until its ``exp`` (RFC 7009 §2): a row of 2100."""
    from smart.store.db import get_session
    from smart.store.models import Client, RevokedToken, now

    with app.app_context():
        get_session().add(Client(client_id="test-client", redirect_uris=["http://127.0.0.1:9999/cb"],
                                 token_endpoint_auth_method="none", grant_types=["authorization_code"]))
        get_session().commit()
    far = token(app, patient="P1", lifetime=YEAR_2100 - now())
    client = app.test_client()
    revoked = client.post("/auth/revoke", data={"token": far, "client_id": "test-client"})
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    with app.app_context():
        assert [row.exp for row in get_session().scalars(select(RevokedToken))] == [YEAR_2100]
    refused = client.get("/fhir/ImagingStudy?patient=P1", headers=bearer(far))
    assert refused.status_code == 401, refused.get_data(as_text=True)


def test_an_audit_event_of_2100_with_an_id_beyond_32_bits_reads_back_exactly(app):
    from smart.store.audit_log import AuditRecord
    from smart.store.db import get_session

    recorded = YEAR_2100 + 0.25
    with app.app_context():
        session = get_session()
        session.add(AuditRecord(id=BIG_ID, event_id="f" * 32, recorded=recorded, type="rest", subtype="read",
                                action="R", outcome="0", patient="P1", resource={"resourceType": "AuditEvent"}))
        session.commit()
        session.expire_all()
        row = session.get(AuditRecord, BIG_ID)
        assert (row.id, row.recorded, row.event_id) == (BIG_ID, recorded, "f" * 32)
        assert session.scalars(select(AuditRecord.id).where(AuditRecord.recorded > YEAR_2100)).all() == [BIG_ID]


def test_a_failed_login_of_2100_with_an_id_beyond_32_bits_reads_back_exactly(app):
    from smart.store.db import get_session
    from smart.store.models import LoginAttempt

    with app.app_context():
        session = get_session()
        session.add(LoginAttempt(id=BIG_ID, username="someone", address="127.0.0.1", at=YEAR_2100))
        session.commit()
        session.expire_all()
        row = session.get(LoginAttempt, BIG_ID)
        assert (row.id, row.at) == (BIG_ID, YEAR_2100)
