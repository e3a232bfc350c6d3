"""index covering what a cluster's running deployments hold

A create that may fit in free capacity sums the requests of the cluster's running
deployments. With the requests in the index, the sum reads only the index, not one table
row per running deployment.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deployments_held",
        "deployments",
        ["cluster_id", "status", "required_cpu", "required_ram", "required_gpu"],
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_held", table_name="deployments")
