"""Share links (issue 15): one new table, ``smart_share_link``; no existing table changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``smart_share_link`` (the secret only as its SHA-256, unique; looked up by patient),
    unless it exists (as 0001 and 0002: a database without ``alembic_version`` that has it)."""
    if "smart_share_link" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "smart_share_link",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("study", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("pin_hash", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.Integer(), nullable=True),
        sa.Column("last_used_at", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_smart_share_link_secret_hash", "smart_share_link", ["secret_hash"], unique=True)
    op.create_index("ix_smart_share_link_patient", "smart_share_link", ["patient"])


def downgrade() -> None:
    """Drop ``smart_share_link``."""
    op.drop_index("ix_smart_share_link_patient", "smart_share_link")
    op.drop_index("ix_smart_share_link_secret_hash", "smart_share_link")
    op.drop_table("smart_share_link")
