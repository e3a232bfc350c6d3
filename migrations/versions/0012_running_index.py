"""index covering what a cluster's running deployments hold, per priority level

Why a deployment waits is explained from what the running deployments of each priority
level hold, and names a few of them. Summed by the database from this index, that costs
no table row per running deployment; it replaces `ix_deployments_held`, which served only
the create's sum of everything running.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deployments_running",
        "deployments",
        [
            "cluster_id",
            "status",
            "priority",
            "id",
            "required_cpu",
            "required_ram",
            "required_gpu",
            "started_at",
        ],
    )
    op.drop_index("ix_deployments_held", table_name="deployments")


def downgrade() -> None:
    op.create_index(
        "ix_deployments_held",
        "deployments",
        ["cluster_id", "status", "required_cpu", "required_ram", "required_gpu"],
    )
    op.drop_index("ix_deployments_running", table_name="deployments")
