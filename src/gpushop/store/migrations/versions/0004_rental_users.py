"""Rentals belong to a user of the team service; Idempotency-Keys of money-spending POSTs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("rentals") as batch:
        batch.add_column(sa.Column("user_id", sa.String(32), nullable=True))
        batch.create_index("ix_rentals_user_id", ["user_id"])
    op.create_table(
        "idempotency",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("rental_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "idempotency_key", name="pk_idempotency"),
    )


def downgrade() -> None:
    op.drop_table("idempotency")
    with op.batch_alter_table("rentals") as batch:
        batch.drop_index("ix_rentals_user_id")
        batch.drop_column("user_id")
