"""The audit trail (issue 16): one table of FHIR AuditEvents with the columns its searches filter on.

A new table; no existing table changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: The indexed columns of ``facade_audit_event`` (smart/store/audit_log.py).
INDEXED = ("recorded", "type", "subtype", "outcome", "patient", "agent_patient", "client_id", "who", "entity")


def upgrade() -> None:
    """Create ``facade_audit_event`` and its indexes, unless a database made by ``create_all``
    (no ``alembic_version``) has them already."""
    if "facade_audit_event" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "facade_audit_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recorded", sa.Float(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subtype", sa.String(64), nullable=True),
        sa.Column("action", sa.String(1), nullable=False),
        sa.Column("outcome", sa.String(2), nullable=False),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("agent_patient", sa.String(64), nullable=True),
        sa.Column("client_id", sa.String(256), nullable=True),
        sa.Column("who", sa.String(256), nullable=True),
        sa.Column("entity", sa.String(128), nullable=True),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    for column in INDEXED:
        op.create_index(f"ix_facade_audit_event_{column}", "facade_audit_event", [column])


def downgrade() -> None:
    """Drop the table and its indexes."""
    for column in INDEXED:
        op.drop_index(f"ix_facade_audit_event_{column}", "facade_audit_event")
    op.drop_table("facade_audit_event")
