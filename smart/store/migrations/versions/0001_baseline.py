"""Baseline: the schema of the release before migrations (``create_all`` of the models at 51fd46a).

A database made by that release has no ``alembic_version`` table; it may also lack tables the
release added late (``smart_patient_access``). This revision therefore creates each table only
when it is missing and leaves existing tables and their rows as they are, so one
``init-db`` brings a new database and an old one alike to the head.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list, list[tuple[str, list[str]]]]]:
    """(table, columns and constraints, [(index name, columns)]), parents before children."""
    integer, text = sa.Integer, sa.Text
    return [
        ("facade_patient_alias", [
            sa.Column("fhir_id", sa.String(64), nullable=False),
            sa.Column("patient_id", text(), nullable=False),
            sa.PrimaryKeyConstraint("fhir_id"),
        ], []),
        ("smart_client", [
            sa.Column("id", integer(), nullable=False),
            sa.Column("client_id", sa.String(128), nullable=False),
            sa.Column("client_secret_hash", sa.String(256), nullable=True),
            sa.Column("client_name", sa.String(256), nullable=True),
            sa.Column("redirect_uris", sa.JSON(), nullable=False),
            sa.Column("scope", text(), nullable=True),
            sa.Column("token_endpoint_auth_method", sa.String(64), nullable=False),
            sa.Column("grant_types", sa.JSON(), nullable=False),
            sa.Column("jwks", sa.JSON(), nullable=True),
            sa.Column("jwks_uri", text(), nullable=True),
            sa.Column("created_at", integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("client_id"),
        ], []),
        ("smart_issued_access_token", [
            sa.Column("jti", sa.String(64), nullable=False),
            sa.Column("code_id", integer(), nullable=False),
            sa.Column("exp", integer(), nullable=False),
            sa.PrimaryKeyConstraint("jti"),
        ], [("ix_smart_issued_access_token_code_id", ["code_id"]), ("ix_smart_issued_access_token_exp", ["exp"])]),
        ("smart_launch_context", [
            sa.Column("launch_id", sa.String(64), nullable=False),
            sa.Column("patient", sa.String(64), nullable=True),
            sa.Column("encounter", sa.String(64), nullable=True),
            sa.Column("username", sa.String(128), nullable=True),
            sa.Column("need_patient_banner", sa.Boolean(), nullable=False),
            sa.Column("smart_style_url", text(), nullable=True),
            sa.Column("created_at", integer(), nullable=False),
            sa.Column("expires_at", integer(), nullable=False),
            sa.Column("used_at", integer(), nullable=True),
            sa.PrimaryKeyConstraint("launch_id"),
        ], []),
        ("smart_login_attempt", [
            sa.Column("id", integer(), nullable=False),
            sa.Column("username", sa.String(128), nullable=False),
            sa.Column("address", sa.String(64), nullable=False),
            sa.Column("at", integer(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_smart_login_attempt_address", ["address"]), ("ix_smart_login_attempt_at", ["at"]),
            ("ix_smart_login_attempt_username", ["username"])]),
        ("smart_patient_access", [
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("subject", sa.String(128), nullable=False),
            sa.Column("patient", sa.String(64), nullable=False),
            sa.Column("granted_at", integer(), nullable=False),
            sa.PrimaryKeyConstraint("kind", "subject", "patient"),
        ], []),
        ("smart_revoked_token", [
            sa.Column("jti", sa.String(64), nullable=False),
            sa.Column("exp", integer(), nullable=False),
            sa.PrimaryKeyConstraint("jti"),
        ], [("ix_smart_revoked_token_exp", ["exp"])]),
        ("smart_setting", [
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("value", text(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        ], []),
        ("smart_signing_key", [
            sa.Column("kid", sa.String(64), nullable=False),
            sa.Column("private_jwk", text(), nullable=False),
            sa.Column("alg", sa.String(16), nullable=False),
            sa.Column("created_at", integer(), nullable=False),
            sa.Column("retired_at", integer(), nullable=True),
            sa.PrimaryKeyConstraint("kid"),
        ], []),
        ("smart_used_assertion", [
            sa.Column("client_id", sa.String(128), nullable=False),
            sa.Column("jti", sa.String(256), nullable=False),
            sa.Column("exp", integer(), nullable=False),
            sa.PrimaryKeyConstraint("client_id", "jti"),
        ], [("ix_smart_used_assertion_exp", ["exp"])]),
        ("smart_user", [
            sa.Column("id", integer(), nullable=False),
            sa.Column("username", sa.String(128), nullable=False),
            sa.Column("password_hash", sa.String(256), nullable=False),
            sa.Column("patient", sa.String(64), nullable=True),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("fhir_user_reference", sa.String(256), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("username"),
        ], []),
        ("smart_authorization_code", [
            sa.Column("id", integer(), nullable=False),
            sa.Column("code_hash", sa.String(64), nullable=False),
            sa.Column("client_id", sa.String(128), nullable=False),
            sa.Column("user_id", integer(), nullable=False),
            sa.Column("redirect_uri", text(), nullable=False),
            sa.Column("scope", text(), nullable=False),
            sa.Column("nonce", text(), nullable=True),
            sa.Column("code_challenge", sa.String(128), nullable=True),
            sa.Column("code_challenge_method", sa.String(16), nullable=True),
            sa.Column("aud", text(), nullable=True),
            sa.Column("context", sa.JSON(), nullable=False),
            sa.Column("auth_time", integer(), nullable=False),
            sa.Column("expires_at", integer(), nullable=False),
            sa.Column("used_at", integer(), nullable=True),
            sa.Column("access_jti", sa.String(64), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["smart_user.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("code_hash"),
        ], [("ix_smart_authorization_code_client_id", ["client_id"])]),
        ("smart_refresh_token", [
            sa.Column("id", integer(), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("client_id", sa.String(128), nullable=False),
            sa.Column("user_id", integer(), nullable=True),
            sa.Column("scope", text(), nullable=False),
            sa.Column("context", sa.JSON(), nullable=False),
            sa.Column("issued_at", integer(), nullable=False),
            sa.Column("expires_at", integer(), nullable=True),
            sa.Column("revoked_at", integer(), nullable=True),
            sa.Column("code_id", integer(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["smart_user.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_hash"),
        ], [("ix_smart_refresh_token_client_id", ["client_id"]), ("ix_smart_refresh_token_code_id", ["code_id"])]),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, elements, indexes in _tables():
        if name in existing:
            continue
        op.create_table(name, *elements)
        for index, columns in indexes:
            op.create_index(index, name, columns, unique=False)


def downgrade() -> None:
    for name, _elements, _indexes in reversed(_tables()):
        op.drop_table(name)
