"""Reconciliation results: one run per UTC day (replaced whole when the day is run again) and
its breaks, one row per difference between the ledger and the bank's settlement report."""

from __future__ import annotations

import sqlalchemy as sa

from paygate.platform.db.tables import Amount, Id, Json, Time, metadata

# The latest run of a day. Re-running the day updates this row under its lock and replaces the
# day's breaks in the same transaction, so readers see one run whole, never a mix of two.
reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    sa.Column("date", sa.String(10), primary_key=True),  # the reconciled UTC day, YYYY-MM-DD
    sa.Column("id", Id, nullable=False, unique=True),  # new on every run of the day
    sa.Column("status", sa.String(20), nullable=False),  # balanced | breaks
    sa.Column("matched", sa.Integer, nullable=False),
    sa.Column("bank_rows", sa.Integer, nullable=False),
    sa.Column("ledger_rows", sa.Integer, nullable=False),
    # [{"currency", "ours", "bank"}]: net signed minor units (refunds negative).
    sa.Column("totals", Json, nullable=False),
    sa.Column("breaks_by_kind", Json, nullable=False),  # {kind: count}
    sa.Column("created", Time, nullable=False),
)

reconciliation_breaks = sa.Table(
    "reconciliation_breaks",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("date", sa.String(10), sa.ForeignKey("reconciliation_runs.date"), nullable=False),
    sa.Column("run_id", Id, nullable=False),
    # missing_at_bank | missing_in_ledger | amount_mismatch | currency_mismatch | duplicate |
    # timing
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("payment_id", Id),
    sa.Column("refund_id", Id),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("our_amount", Amount),
    sa.Column("our_currency", sa.String(3)),
    sa.Column("bank_amount", Amount),
    sa.Column("bank_currency", sa.String(3)),
    sa.Column("details", Json, nullable=False),
    sa.Column("created", Time, nullable=False),
    sa.Index("ix_reconciliation_breaks_date", "date", "id"),
)
