"""guest definitions

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-01

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0005"
down_revision: str | None = "r0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("guests") as batch:
        batch.add_column(sa.Column("definition", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guests") as batch:
        batch.drop_column("definition")
