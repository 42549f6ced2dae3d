"""Initial schema: meta, rentals, rental_events, host_blocks, timings.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "gpushop_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_gpushop_meta"),
    )
    op.create_table(
        "rentals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(128), nullable=True),
        sa.Column("instance_id", sa.String(128), nullable=True),
        sa.Column("gpu_name", sa.String(64), nullable=True),
        sa.Column("num_gpus", sa.Integer(), nullable=True),
        sa.Column("price_per_hour", sa.Float(), nullable=True),
        sa.Column("disk_gb", sa.Float(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("template_hash", sa.String(128), nullable=True),
        sa.Column("interruptible", sa.Boolean(), nullable=False),
        sa.Column("bid_price", sa.Float(), nullable=True),
        sa.Column("keep_interrupted", sa.Boolean(), nullable=False),
        sa.Column("max_duration_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("ready_at", sa.DateTime(), nullable=True),
        sa.Column("running_since", sa.DateTime(), nullable=True),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("owner_host", sa.String(255), nullable=True),
        sa.Column("owner_pid", sa.Integer(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("ssh_host", sa.String(255), nullable=True),
        sa.Column("ssh_port", sa.Integer(), nullable=True),
        sa.Column("ssh_user", sa.String(64), nullable=True),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("machine_id", sa.String(128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("segments", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rentals"),
        sa.UniqueConstraint("label", name="uq_rentals_label"),
    )
    op.create_index("ix_rentals_state", "rentals", ["state"])
    op.create_index("ix_rentals_instance_id", "rentals", ["instance_id"])
    op.create_index("ix_rentals_created_at", "rentals", ["created_at"])
    op.create_table(
        "rental_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rental_id", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("old_state", sa.String(16), nullable=True),
        sa.Column("new_state", sa.String(16), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rental_id"],
            ["rentals.id"],
            name="fk_rental_events_rental_id_rentals",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rental_events"),
    )
    op.create_index("ix_rental_events_rental_id", "rental_events", ["rental_id"])
    op.create_table(
        "host_blocks",
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("machine_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "machine_id", name="pk_host_blocks"),
    )
    op.create_index("ix_host_blocks_until", "host_blocks", ["until"])
    op.create_table(
        "timings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rental_id", sa.String(32), nullable=True),
        sa.Column("phase", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_timings"),
    )
    op.create_index("ix_timings_rental_id", "timings", ["rental_id"])
    op.create_index("ix_timings_phase", "timings", ["phase"])


def downgrade() -> None:
    op.drop_table("timings")
    op.drop_table("host_blocks")
    op.drop_table("rental_events")
    op.drop_table("rentals")
    op.drop_table("gpushop_meta")
