"""guests and cpu_history

Revision ID: r0001
Revises:
Create Date: 2026-11-25

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "guests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("machine", sa.String(length=64), nullable=False),
        sa.Column("pin_json", sa.Text(), nullable=False),
        sa.Column("pin_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("pending_json", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_guests"),
        sa.UniqueConstraint("name", name="uq_guests_name"),
    )
    op.create_table(
        "cpu_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("guest_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("old_fingerprint", sa.String(length=128), nullable=True),
        sa.Column("new_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("old_pin_json", sa.Text(), nullable=True),
        sa.Column("new_pin_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["guest_id"],
            ["guests.id"],
            name="fk_cpu_history_guest_id_guests",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cpu_history"),
    )
    op.create_index("ix_cpu_history_guest_id_at", "cpu_history", ["guest_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_cpu_history_guest_id_at", table_name="cpu_history")
    op.drop_table("cpu_history")
    op.drop_table("guests")
