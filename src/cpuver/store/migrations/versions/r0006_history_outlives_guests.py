"""cpu history outlives its guest

An undefined guest's CPU history stays for audit: each row names its guest, and the row's link
to the guest is cleared (not cascaded) when the guest is removed, so the name can be used again.

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-01

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0006"
down_revision: str | None = "r0005"
branch_labels: str | None = None
depends_on: str | None = None

FK = "fk_cpu_history_guest_id_guests"


def upgrade() -> None:
    with op.batch_alter_table("cpu_history") as batch:
        batch.add_column(sa.Column("guest_name", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE cpu_history SET guest_name = "
        "(SELECT guests.name FROM guests WHERE guests.id = cpu_history.guest_id)"
    )
    with op.batch_alter_table("cpu_history") as batch:
        batch.alter_column("guest_name", existing_type=sa.String(length=255), nullable=False)
        batch.alter_column("guest_id", existing_type=sa.Integer(), nullable=True)
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(FK, "guests", ["guest_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_cpu_history_guest_name_at", ["guest_name", "at"])


def downgrade() -> None:
    op.execute("DELETE FROM cpu_history WHERE guest_id IS NULL")
    with op.batch_alter_table("cpu_history") as batch:
        batch.drop_index("ix_cpu_history_guest_name_at")
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(FK, "guests", ["guest_id"], ["id"], ondelete="CASCADE")
        batch.alter_column("guest_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("guest_name")
