"""All SQL of `fraud_assessments`: every screening of a payment, appended, never changed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.fraud.screening import Assessment
from paygate.fraud.tables import fraud_assessments
from paygate.ids import new_id, now_s
from paygate.platform.db import deferred


async def insert(
    conn: AsyncConnection,
    *,
    payment_id: str,
    merchant_id: str,
    livemode: bool,
    assessment: Assessment,
) -> str:
    assessment_id = new_id("fas")
    # No score when the model did not answer (a fail mode decided, or a rule while it failed).
    unscored = assessment.source in ("fail_open", "fail_closed") or (
        assessment.source == "rule" and assessment.model_version is None
    )
    await deferred.insert(
        conn,
        fraud_assessments,
        dict(
            id=assessment_id,
            payment_id=payment_id,
            merchant_id=merchant_id,
            livemode=livemode,
            score=None if unscored else assessment.score,
            level=assessment.level,
            decision=assessment.decision,
            reasons=list(assessment.reasons),
            source=assessment.source,
            model_version=assessment.model_version,
            created=now_s(),
        ),
    )
    return assessment_id


def _from_row(row: sa.RowMapping) -> Assessment:
    return Assessment(
        score=row["score"] or 0,
        level=row["level"],
        decision=row["decision"],
        reasons=tuple(row["reasons"]),
        source=row["source"],
        model_version=row["model_version"],
    )


async def latest(conn: AsyncConnection, payment_id: str) -> tuple[str, Assessment] | None:
    """The payment's newest assessment and its id."""
    row = (
        (
            await conn.execute(
                sa.select(fraud_assessments)
                .where(fraud_assessments.c.payment_id == payment_id)
                .order_by(fraud_assessments.c.id.desc())
                .limit(1)
            )
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else (row["id"], _from_row(row))


_OF_PAYMENTS = (
    sa.select(fraud_assessments)
    .where(fraud_assessments.c.payment_id.in_(sa.bindparam("match_ids", expanding=True)))
    .order_by(fraud_assessments.c.id)
)


async def latest_of(
    conn: AsyncConnection, payment_ids: list[str]
) -> dict[str, tuple[str, Assessment]]:
    """`latest` of several payments in one statement, keyed by payment id (payments never
    screened are absent)."""
    if not payment_ids:
        return {}
    rows = (await conn.execute(_OF_PAYMENTS, {"match_ids": list(payment_ids)})).mappings()
    return {row["payment_id"]: (row["id"], _from_row(row)) for row in rows}


async def for_payment(conn: AsyncConnection, payment_id: str) -> list[dict[str, Any]]:
    rows = (
        (
            await conn.execute(
                sa.select(fraud_assessments)
                .where(fraud_assessments.c.payment_id == payment_id)
                .order_by(fraud_assessments.c.id)
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
