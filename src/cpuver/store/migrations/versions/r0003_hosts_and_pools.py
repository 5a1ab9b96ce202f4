"""hosts and pools

Revision ID: r0003
Revises: r0002
Create Date: 2026-11-25

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0003"
down_revision: str | None = "r0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("snapshot_json", sa.Text(), nullable=False),
        sa.Column("added", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hosts"),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
    )
    op.create_table(
        "host_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name="fk_host_snapshots_host_id_hosts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_host_snapshots"),
    )
    op.create_index("ix_host_snapshots_host_id_at", "host_snapshots", ["host_id", "at"])
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pools"),
        sa.UniqueConstraint("name", name="uq_pools_name"),
    )
    op.create_table(
        "pool_members",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name="fk_pool_members_host_id_hosts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name="fk_pool_members_pool_id_pools", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pool_id", "host_id", name="pk_pool_members"),
    )
    op.create_index("ix_pool_members_host_id", "pool_members", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_pool_members_host_id", table_name="pool_members")
    op.drop_table("pool_members")
    op.drop_table("pools")
    op.drop_index("ix_host_snapshots_host_id_at", table_name="host_snapshots")
    op.drop_table("host_snapshots")
    op.drop_table("hosts")
