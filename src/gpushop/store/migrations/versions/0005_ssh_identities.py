"""Users' public SSH keys, installed on their rentals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "ssh_identities",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("public_line", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ssh_identities"),
    )
    op.create_index("ix_ssh_identities_user_id", "ssh_identities", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_ssh_identities_user_id", "ssh_identities")
    op.drop_table("ssh_identities")
