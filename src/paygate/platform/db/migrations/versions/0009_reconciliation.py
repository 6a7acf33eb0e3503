"""reconciliation against the bank's report

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


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("bank_rows", sa.Integer(), nullable=False),
        sa.Column("ledger_rows", sa.Integer(), nullable=False),
        sa.Column("totals", sa.Text(), nullable=False),
        sa.Column("breaks_by_kind", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("date", name=op.f("pk_reconciliation_runs")),
        sa.UniqueConstraint("id", name=op.f("uq_reconciliation_runs_id")),
    )
    op.create_table(
        "reconciliation_breaks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("refund_id", sa.String(length=40), nullable=True),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("our_amount", sa.BigInteger(), nullable=True),
        sa.Column("our_currency", sa.String(length=3), nullable=True),
        sa.Column("bank_amount", sa.BigInteger(), nullable=True),
        sa.Column("bank_currency", sa.String(length=3), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["date"],
            ["reconciliation_runs.date"],
            name=op.f("fk_reconciliation_breaks_date_reconciliation_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_breaks")),
    )
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.create_index("ix_reconciliation_breaks_date", ["date", "id"], unique=False)
    # Reconciliation reads the ledger by day.
    op.create_index("ix_ledger_entries_created", "ledger_entries", ["created"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_created", table_name="ledger_entries")
    with op.batch_alter_table("reconciliation_breaks", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_breaks_date")

    op.drop_table("reconciliation_breaks")
    op.drop_table("reconciliation_runs")
