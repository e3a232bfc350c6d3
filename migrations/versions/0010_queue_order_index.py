"""index for a cluster's whole queue in scheduling order (eligible or not)

The queue endpoint lists every pending deployment in queue order, whatever its
dependencies: `ix_deployments_queue` has `eligible` before the order, so a page had to
sort the whole queue (PostgreSQL: a full scan and a top-N sort at 10,000 pending).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deployments_queue_order",
        "deployments",
        ["cluster_id", "status", sa.text("priority DESC"), "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_queue_order", table_name="deployments")
