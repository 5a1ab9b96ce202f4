"""guest snapshots

Revision ID: r0002
Revises: r0001
Create Date: 2026-11-25

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0002"
down_revision: str | None = "r0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("guests") as batch:
        batch.add_column(
            sa.Column("snapshots_json", sa.Text(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("guests") as batch:
        batch.drop_column("snapshots_json")
