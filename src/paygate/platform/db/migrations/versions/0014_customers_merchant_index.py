"""customers are listed through an index of (merchant_id, livemode, id)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customers_merchant_id", "customers", ["merchant_id", "livemode", "id"])


def downgrade() -> None:
    op.drop_index("ix_customers_merchant_id", table_name="customers")
