"""Tables of settlements and of the merchant terms they pay by: bank accounts (the IBAN sealed
by the vault's keyring, never in plain text), per-merchant pricing and payout delay, and the
daily settlements themselves."""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Amount, Id, Json, Time, metadata

# One bank account per merchant, where its payouts go. The IBAN is sealed (AES-GCM, key id
# beside it); only its last four characters and its country are kept in the clear.
merchant_bank_accounts = sa.Table(
    "merchant_bank_accounts",
    metadata,
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), primary_key=True),
    sa.Column("iban_key_id", sa.String(40), nullable=False),
    sa.Column("iban_sealed", sa.LargeBinary, nullable=False),
    sa.Column("iban_last4", sa.String(4), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("bic", sa.String(11)),
    sa.Column("account_holder", sa.String(140), nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Column("updated", Time, nullable=False),
)

# A merchant's own terms; a missing row or a null column means the platform's default.
merchant_terms = sa.Table(
    "merchant_terms",
    metadata,
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), primary_key=True),
    sa.Column("pricing", Json),  # {"percent_bps", "fixed": {currency: minor units}, "refund_fees"}
    sa.Column("payout_delay_days", sa.Integer),
    sa.Column("updated", Time, nullable=False),
)

settlements = sa.Table(
    "settlements",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("date", sa.String(10), nullable=False),  # the settled day, YYYY-MM-DD (UTC)
    sa.Column("cutoff", Time, nullable=False),  # what was available by this time was settled
    sa.Column("gross", Amount, nullable=False),
    sa.Column("refunds", Amount, nullable=False),
    sa.Column("fees", Amount, nullable=False),
    sa.Column("net", Amount, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # paid | carried_forward | payout_blocked
    sa.Column("payout_amount", Amount, nullable=False),
    sa.Column("payout_file", sa.String(200)),  # object store key of the pain.001 file
    sa.Column("created", Time, nullable=False),
    sa.UniqueConstraint("merchant_id", "livemode", "currency", "date"),
    sa.Index("ix_settlements_merchant", "merchant_id", "livemode", "id"),
    sa.Index("ix_settlements_date", "date"),
)
