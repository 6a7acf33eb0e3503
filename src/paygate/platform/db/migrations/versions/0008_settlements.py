"""settlements, payouts and merchant bank accounts

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


def upgrade() -> None:
    op.create_table(
        "merchant_bank_accounts",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("iban_key_id", sa.String(length=40), nullable=False),
        sa.Column("iban_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("iban_last4", sa.String(length=4), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("bic", sa.String(length=11), nullable=True),
        sa.Column("account_holder", sa.String(length=140), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_merchant_bank_accounts_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_merchant_bank_accounts")),
    )
    op.create_table(
        "merchant_terms",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("pricing", sa.Text(), nullable=True),
        sa.Column("payout_delay_days", sa.Integer(), nullable=True),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_terms_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_merchant_terms")),
    )
    op.create_table(
        "settlements",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("cutoff", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("refunds", sa.BigInteger(), nullable=False),
        sa.Column("fees", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("payout_amount", sa.BigInteger(), nullable=False),
        sa.Column("payout_file", sa.String(length=200), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_settlements_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint(
            "merchant_id",
            "livemode",
            "currency",
            "date",
            name=op.f("uq_settlements_merchant_id_livemode_currency_date"),
        ),
    )
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.create_index("ix_settlements_date", ["date"], unique=False)
        batch_op.create_index(
            "ix_settlements_merchant", ["merchant_id", "livemode", "id"], unique=False
        )
    # The balance transactions a settlement covers are found by it.
    with op.batch_alter_table("balance_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_balance_transactions_settlement", ["settlement_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("balance_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_balance_transactions_settlement")
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_index("ix_settlements_merchant")
        batch_op.drop_index("ix_settlements_date")
    op.drop_table("settlements")
    op.drop_table("merchant_terms")
    op.drop_table("merchant_bank_accounts")
