"""events carry their deployment's organization and cluster, indexed with the id

So an organization's event feed (SPEC §4 "Events") reads one page by index in id order.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INDEXES = {
    "ix_deployment_events_organization_id_id": ["organization_id", "id"],
    "ix_deployment_events_cluster_id_id": ["cluster_id", "id"],
    "ix_deployment_events_deployment_id_id": ["deployment_id", "id"],
}
# A SQLite rebuild reflects the table alone, not the tables it refers to (whose expression
# indexes SQLAlchemy cannot reflect and would warn about).
NO_FK_REFLECTION = {"resolve_fks": False}


def upgrade() -> None:
    with op.batch_alter_table("deployment_events", reflect_kwargs=NO_FK_REFLECTION) as batch:
        batch.add_column(sa.Column("organization_id", Id, nullable=True))
        batch.add_column(sa.Column("cluster_id", Id, nullable=True))
    # Every event so far takes its deployment's organization and cluster (neither changes).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE deployment_events AS e SET organization_id = d.organization_id, "
            "cluster_id = d.cluster_id FROM deployments AS d WHERE d.id = e.deployment_id"
        )
    else:
        op.execute(
            "UPDATE deployment_events SET "
            "organization_id = (SELECT d.organization_id FROM deployments AS d "
            "WHERE d.id = deployment_events.deployment_id), "
            "cluster_id = (SELECT d.cluster_id FROM deployments AS d "
            "WHERE d.id = deployment_events.deployment_id)"
        )
    op.drop_index("ix_deployment_events_deployment_id", table_name="deployment_events")
    # On SQLite this rebuilds the table (it cannot add NOT NULL or a foreign key in place);
    # the table has no expression index that a rebuild would lose.
    with op.batch_alter_table("deployment_events", reflect_kwargs=NO_FK_REFLECTION) as batch:
        batch.alter_column("organization_id", existing_type=Id, nullable=False)
        batch.alter_column("cluster_id", existing_type=Id, nullable=False)
        batch.create_foreign_key(
            op.f("fk_deployment_events_organization_id_organizations"),
            "organizations",
            ["organization_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            op.f("fk_deployment_events_cluster_id_clusters"),
            "clusters",
            ["cluster_id"],
            ["id"],
            ondelete="CASCADE",
        )
    for name, columns in INDEXES.items():
        op.create_index(name, "deployment_events", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="deployment_events")
    op.create_index("ix_deployment_events_deployment_id", "deployment_events", ["deployment_id"])
    with op.batch_alter_table("deployment_events", reflect_kwargs=NO_FK_REFLECTION) as batch:
        batch.drop_constraint(op.f("fk_deployment_events_cluster_id_clusters"), type_="foreignkey")
        batch.drop_constraint(
            op.f("fk_deployment_events_organization_id_organizations"), type_="foreignkey"
        )
        batch.drop_column("cluster_id")
        batch.drop_column("organization_id")
