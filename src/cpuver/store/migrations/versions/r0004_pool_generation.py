"""pool generation: a change counter per pool

Revision ID: r0004
Revises: r0003
Create Date: 2026-12-01

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0004"
down_revision: str | None = "r0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("generation")
