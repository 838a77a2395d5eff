"""Timestamps past 2038 on PostgreSQL: every epoch-second column, and two row ids, to ``BIGINT``.

PostgreSQL's ``INTEGER`` is 32 bits, so an ``expires_at`` after 2038-01-19 03:14:07 UTC (a share
link or a refresh token of a long configured life, a token ``exp``) failed to insert, and every
row would in 2038. The row ids of ``facade_audit_event`` (one per recorded event) and
``smart_login_attempt`` (one per failed login, at an attacker's pace) are not reused when rows
are pruned and may pass 2**31 - 1 in a deployment's life; their sequences become ``bigint`` too
(``ALTER SEQUENCE ... AS bigint`` moves a sequence's MAXVALUE to bigint's when it was integer's).
Other ids (clients, users, codes, refresh tokens) and counters (``uses``) grow with people, not
with requests, and stay ``INTEGER``.

On PostgreSQL each column is altered in place (``ALTER COLUMN ... TYPE BIGINT``): nullability,
indexes and defaults are kept; the table is rewritten once per column, under an exclusive lock
(the audit table, the largest, has one column altered). A column that is ``BIGINT`` already (a
database ``create_all`` made from the current models, without ``alembic_version``) is left as is.

On SQLite nothing changes, in the data or the schema: any integer of a column of INTEGER
affinity is stored in up to 8 bytes whatever its declared type, so 2100 fits in these columns
already. The models declare them ``INTEGER`` on SQLite (:mod:`smart.store.columns`: a
``BigInteger`` variant), which keeps the rowid alias of ``INTEGER PRIMARY KEY`` and lets
``compare_metadata`` see the SQLite schema as the models' without a rule of its own. Copying
every table (``batch_alter_table``) only to rename the declared type would cost a full copy of
the audit table for no stored bit changed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Epoch-second columns, by table (the tables of revisions 0001-0004).
TIMESTAMPS = {
    "smart_client": ("created_at",),
    "smart_authorization_code": ("auth_time", "expires_at", "used_at"),
    "smart_refresh_token": ("issued_at", "expires_at", "revoked_at"),
    "smart_issued_access_token": ("exp",),
    "smart_signing_key": ("created_at", "retired_at"),
    "smart_revoked_token": ("exp",),
    "smart_launch_context": ("created_at", "expires_at", "used_at"),
    "smart_used_assertion": ("exp",),
    "smart_login_attempt": ("at",),
    "smart_patient_access": ("granted_at",),
    "smart_trusted_issuer": ("created_at",),
    "smart_consent": ("granted_at", "updated_at"),
    "smart_share_link": ("created_at", "expires_at", "revoked_at", "last_used_at"),
}

#: Autoincremented row ids that become 64-bit, with their sequences.
ROW_IDS = {
    "facade_audit_event": "id",
    "smart_login_attempt": "id",
}


def _columns() -> list[tuple[str, str]]:
    """Every (table, column) this revision alters."""
    return [(table, column) for table, columns in TIMESTAMPS.items() for column in columns] + list(ROW_IDS.items())


def _retype(source: type, target: type) -> None:
    """ALTER each column of :func:`_columns` whose type is *source* to *target*, and the sequence
    of each row id to match (PostgreSQL only)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    inspector = sa.inspect(bind)
    for table, column in _columns():
        found = {c["name"]: c for c in inspector.get_columns(table)}[column]
        if type(found["type"]) is not source:
            continue
        op.alter_column(table, column, existing_type=source(), type_=target(),
                        existing_nullable=found["nullable"])
    for table, column in ROW_IDS.items():
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
                                {"table": table, "column": column}).scalar()
        if sequence is not None:
            op.execute(f"ALTER SEQUENCE {sequence} AS {target().compile(dialect=bind.dialect)}")


def upgrade() -> None:
    """``INTEGER`` -> ``BIGINT`` on PostgreSQL (columns and row id sequences); nothing on SQLite."""
    _retype(sa.INTEGER, sa.BIGINT)


def downgrade() -> None:
    """``BIGINT`` -> ``INTEGER`` on PostgreSQL; nothing on SQLite.

    Fails (``integer out of range``), changing nothing, while a row holds a time after
    2038-01-19 03:14:07 UTC or an id beyond 2**31 - 1: such a database cannot go back.
    """
    _retype(sa.BIGINT, sa.INTEGER)
