"""the forecast's estimates on deployments, and the revisions that say when to redo it

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("deployments", sa.Column("estimated_start_at", Timestamp, nullable=True))
    op.add_column("deployments", sa.Column("estimated_end_at", Timestamp, nullable=True))
    op.add_column("deployments", sa.Column("estimate_basis", sa.String(16), nullable=True))
    op.add_column("deployments", sa.Column("estimate_reason", sa.String(1024), nullable=True))
    op.add_column(
        "clusters", sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "clusters",
        sa.Column("forecast_revision", sa.BigInteger(), nullable=False, server_default="-1"),
    )


def downgrade() -> None:
    for name in ("revision", "forecast_revision"):
        op.drop_column("clusters", name)
    for name in ("estimated_start_at", "estimated_end_at", "estimate_basis", "estimate_reason"):
        op.drop_column("deployments", name)
