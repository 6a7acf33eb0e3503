"""an index for the sweep of expired authorizations

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without it the sweep scans every payment once a second.
    op.create_index("ix_payments_held", "payments", ["status", "updated"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_payments_held", table_name="payments")
