"""Training labels from the gateway's own records: its payments, each labelled fraud when a
fraud report (chargeback, card network notice) names it. The result is the labelled history of
`paygate.fraud.history` (`id`, `created`, `card`, `merchant`, `amount`, `currency`,
`is_fraud`), so that `paygate fraud train --from-db` trains exactly as from a CSV.

Payments screening declined (`fraud_suspected` before any bank call) never had an outcome and
are left out, as are payments not yet decided (`pending`, `processing`). Test-mode payments are
left out unless asked for."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from paygate.fraud.tables import fraud_reports
from paygate.platform.db import Database
from paygate.platform.db.tables import payments

COLUMNS = ["id", "created", "card", "merchant", "amount", "currency", "is_fraud"]


async def labelled_history(db: Database, *, include_test: bool = False) -> pd.DataFrame:
    c = payments.c
    reported = sa.exists().where(fraud_reports.c.payment_id == c.id)
    query = (
        sa.select(
            c.id,
            c.created,
            c.payment_method,
            c.merchant_id,
            c.amount,
            c.currency,
            reported.label("is_fraud"),
        )
        .where(
            c.status.not_in(("pending", "processing")),
            sa.or_(c.failure_code.is_(None), c.failure_code != "fraud_suspected"),
        )
        .order_by(c.created, c.id)
    )
    if not include_test:
        query = query.where(c.livemode.is_(True))
    async with db.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return pd.DataFrame(
        [
            {
                "id": r["id"],
                "created": int(r["created"]),
                "card": r["payment_method"]["card"]["fingerprint"],
                "merchant": r["merchant_id"],
                "amount": int(r["amount"]),
                "currency": r["currency"],
                "is_fraud": int(bool(r["is_fraud"])),
            }
            for r in rows
        ],
        columns=COLUMNS,
    )


async def read_labelled_history(url: str, *, include_test: bool = False) -> pd.DataFrame:
    """`labelled_history` of the database at `url`, opening and closing its own engine."""
    db = Database(url)
    try:
        return await labelled_history(db, include_test=include_test)
    finally:
        await db.dispose()
