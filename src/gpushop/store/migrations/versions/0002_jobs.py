"""Jobs, and timings per job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rental_id", sa.String(32), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("remote_dir", sa.Text(), nullable=True),
        sa.Column("log_offset", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("owner_host", sa.String(255), nullable=True),
        sa.Column("owner_pid", sa.Integer(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_rental_id", "jobs", ["rental_id"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    with op.batch_alter_table("timings") as batch:
        batch.add_column(sa.Column("job_id", sa.String(32), nullable=True))
        batch.create_index("ix_timings_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("timings") as batch:
        batch.drop_index("ix_timings_job_id")
        batch.drop_column("job_id")
    op.drop_table("jobs")
