"""Ledger tables. Rows are only ever inserted: a correction is a new entry, never an update
(balance transactions change status once, from pending to available, when their funds are
released by an entry of their own)."""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Amount, Id, Time, metadata

ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_id", Id),
    sa.Column("refund_id", Id),
    sa.Column("settlement_id", Id),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_ledger_entries_payment", "payment_id"),
    sa.Index("ix_ledger_entries_created", "created"),
)

ledger_postings = sa.Table(
    "ledger_postings",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("entry_id", Id, sa.ForeignKey("ledger_entries.id"), nullable=False, index=True),
    sa.Column("account", sa.String(80), nullable=False),
    sa.Column("merchant_id", Id),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_ledger_postings_account", "account", "currency"),
    sa.Index("ix_ledger_postings_merchant", "merchant_id", "currency"),
)

# What a merchant sees of the ledger: one row per charge, refund, or payout, with its fee and
# when its funds become available.
balance_transactions = sa.Table(
    "balance_transactions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),  # charge | refund | refund_failure | payout
    sa.Column("source", Id, nullable=False),
    sa.Column("amount", Amount, nullable=False),
    sa.Column("fee", Amount, nullable=False),
    sa.Column("net", Amount, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending | available
    sa.Column("available_on", Time, nullable=False),
    sa.Column("settlement_id", Id),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_balance_transactions_merchant", "merchant_id", "livemode", "id"),
    sa.Index("ix_balance_transactions_due", "status", "available_on"),
    sa.Index("ix_balance_transactions_settlement", "settlement_id"),
    sa.UniqueConstraint("type", "source", name="uq_balance_transactions_type_source"),
)
