"""Tables of the fraud service. Assessments, reports and review decisions are append-only (the
migration adds triggers that refuse UPDATE and DELETE): a later view of a payment is a new row,
never an edit of an old one. Settings are one row per merchant, changed in place."""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Id, Json, Time, metadata

# One row per screening of a payment: the model's score (none when scoring failed), the
# decision and why. The latest row of a payment is its current assessment.
fraud_assessments = sa.Table(
    "fraud_assessments",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payment_id", Id, nullable=False),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("score", sa.Integer),
    sa.Column("level", sa.String(20), nullable=False),  # normal | elevated | highest
    sa.Column("decision", sa.String(20), nullable=False),  # approve | review | decline
    sa.Column("reasons", Json, nullable=False),
    # model | rule | test_card | fail_open | fail_closed
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("model_version", sa.String(60)),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_fraud_assessments_payment", "payment_id", "id"),
)

# Per-merchant screening settings; a merchant without a row has the defaults.
fraud_settings = sa.Table(
    "fraud_settings",
    metadata,
    sa.Column("merchant_id", Id, sa.ForeignKey("merchants.id"), primary_key=True),
    sa.Column("fail_mode", sa.String(10), nullable=False),  # open | closed
    sa.Column("review_threshold", sa.Integer),
    sa.Column("decline_threshold", sa.Integer),
    sa.Column("updated", Time, nullable=False),
)

# Fraud learned after the payment: a chargeback or a card network's notice. A report moves no
# money; it labels the payment for the features and for training.
fraud_reports = sa.Table(
    "fraud_reports",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False, index=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("type", sa.String(30), nullable=False),  # chargeback | card_network_notice
    sa.Column("reason", sa.String(500)),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_fraud_reports_merchant", "merchant_id", "livemode", "id"),
)

# How each review ended: decided by the merchant, or expired by the merchant's fail mode.
fraud_review_decisions = sa.Table(
    "fraud_review_decisions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False, index=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("decision", sa.String(10), nullable=False),  # approve | reject
    sa.Column("source", sa.String(10), nullable=False),  # merchant | expiry
    sa.Column("created", Time, nullable=False),
)

APPEND_ONLY = ("fraud_assessments", "fraud_reports", "fraud_review_decisions")
