"""Trusted EHR issuers (issue 17), remembered consent and post-logout redirect URIs (issue 14).

Three new tables; no existing table changes, so rows of 0001 stay as they are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``smart_trusted_issuer``, ``smart_consent`` and ``smart_post_logout_redirect_uri``."""
    op.create_table(
        "smart_trusted_issuer",
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("patient_identifier_system", sa.Text(), nullable=False),
        sa.Column("fhir_base", sa.Text(), nullable=True),
        sa.Column("audience", sa.Text(), nullable=True),
        sa.Column("introspection_client_id", sa.String(256), nullable=True),
        sa.Column("introspection_secret", sa.Text(), nullable=True),
        sa.Column("introspection_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("issuer"),
    )
    op.create_table(
        "smart_consent",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["smart_user.id"]),
        sa.PrimaryKeyConstraint("user_id", "client_id"),
    )
    op.create_table(
        "smart_post_logout_redirect_uri",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["smart_client.client_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_smart_post_logout_redirect_uri_client_id", "smart_post_logout_redirect_uri",
                    ["client_id"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index("ix_smart_post_logout_redirect_uri_client_id", "smart_post_logout_redirect_uri")
    op.drop_table("smart_post_logout_redirect_uri")
    op.drop_table("smart_consent")
    op.drop_table("smart_trusted_issuer")
