"""when a cluster's forecast rests on a history estimate that has come to pass

The loop forecasts a cluster again once this passes, as it does when its state changes.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("clusters", sa.Column("forecast_valid_until", Timestamp, nullable=True))


def downgrade() -> None:
    op.drop_column("clusters", "forecast_valid_until")
