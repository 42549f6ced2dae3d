"""Jobs submitted to the service: their user, their sealed secrets, and their logs in the store.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("user_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("sealed_secrets", sa.Text(), nullable=True))
        batch.create_index("ix_jobs_user_id", ["user_id"])
    op.create_table(
        "job_log",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_job_log"),
    )


def downgrade() -> None:
    op.drop_table("job_log")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_user_id")
        batch.drop_column("sealed_secrets")
        batch.drop_column("user_id")
