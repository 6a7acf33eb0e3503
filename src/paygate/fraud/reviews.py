"""The review queue: payments held in `requires_review` (authorized, capture held) until the
merchant decides, or until `PAYGATE_REVIEW_EXPIRY_S` passes and the merchant's fail mode decides
(open approves, closed rejects).

- approve, `capture` true: a capture attempt and `payment.capture_requested`; the processor
  captures at the bank and the payment becomes `succeeded` once the bank approves (202 now);
- approve, `capture` false: `requires_capture` at once (200), the merchant captures later;
- reject: a void attempt and `payment.review_rejected`; once the bank confirms the void the
  processor fails the payment with `fraud_suspected` (202 now).

Every decision is appended to `fraud_review_decisions` in the same transaction; each change of
state goes through the state machine (`PaymentState.approve_review`, `.fail`).
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.errors import NotFound, StateConflict
from paygate.fraud.tables import fraud_review_decisions
from paygate.ids import new_id, now_s
from paygate.payments import attempts
from paygate.payments import repository as payments_repo
from paygate.payments.models import Status
from paygate.payments.schemas import render as render_payment
from paygate.payments.service import state_of, transition
from paygate.platform import outbox
from paygate.platform.db.pagination import Page, fetch_page
from paygate.platform.db.tables import payments

Decision = Literal["approve", "reject"]
REJECTED_EVENT = "payment.review_rejected"


def render(row: sa.RowMapping) -> dict[str, Any]:
    risk = row["risk"] or {}
    return {
        "object": "review",
        "payment": row["id"],
        "livemode": row["livemode"],
        "amount": row["amount"],
        "currency": row["currency"],
        "score": risk.get("score"),
        "level": risk.get("level"),
        "reasons": risk.get("reasons", []),
        # Nothing else changes a payment under review: its last change is when it got there.
        "opened_at": row["updated"],
    }


async def list_open(
    conn: AsyncConnection, merchant_id: str, livemode: bool, page: Page
) -> list[dict[str, Any]]:
    c = payments.c
    query = sa.select(payments).where(
        c.merchant_id == merchant_id,
        c.livemode == livemode,
        c.status == Status.REQUIRES_REVIEW.value,
    )
    return [render(r) for r in await fetch_page(conn, query, c.id, page)]


async def decide(
    conn: AsyncConnection,
    merchant_id: str,
    livemode: bool,
    payment_id: str,
    decision: Decision,
    *,
    source: str = "merchant",
) -> tuple[int, dict[str, Any]]:
    """Apply a review decision; returns the HTTP status and the payment."""
    row = await payments_repo.get(conn, merchant_id, livemode, payment_id, for_update=True)
    if row is None:
        raise NotFound("No such payment.", param="id")
    state = state_of(row)
    if state.status != Status.REQUIRES_REVIEW:
        raise StateConflict(f"A payment in status {state.status} is not under review.")
    for attempt in await attempts.open_for_payment(conn, payment_id):
        if attempt["operation"] in ("authorize", "sale", "capture", "void"):
            raise StateConflict(
                f"A {attempt['operation']} of this payment is in progress; the review is "
                "being applied."
            )
    await conn.execute(
        fraud_review_decisions.insert(),
        dict(
            id=new_id("rvd"),
            payment_id=payment_id,
            merchant_id=merchant_id,
            decision=decision,
            source=source,
            created=now_s(),
        ),
    )
    details = {"review": decision, "source": source}
    if decision == "approve" and not row["capture"]:
        return 200, await transition(
            conn,
            row,
            state.approve_review(),
            event="payment.requires_capture",
            details=details,
        )
    approve = decision == "approve"
    await attempts.create(
        conn,
        payment_id=payment_id,
        operation="capture" if approve else "void",
        amount=row["amount_capturable"],
        currency=row["currency"],
    )
    await payments_repo.log(
        conn,
        payment_id,
        "payment.review_approved" if approve else "payment.review_rejected",
        row["status"],
        row["amount_capturable"],
        details,
    )
    payment = render_payment(row)
    await outbox.emit(
        conn,
        type="payment.capture_requested" if approve else REJECTED_EVENT,
        obj=payment,
        merchant_id=merchant_id,
        sequence=row["version"],
    )
    return 202, payment


async def rejected(conn: AsyncConnection, payment_id: str) -> bool:
    """Whether the payment's review was rejected (its void then fails it as fraud)."""
    c = fraud_review_decisions.c
    found = await conn.scalar(
        sa.select(c.id).where(c.payment_id == payment_id, c.decision == "reject").limit(1)
    )
    return found is not None


async def expired(conn: AsyncConnection, *, expiry_s: int, limit: int) -> list[sa.RowMapping]:
    """Undecided payments under review longer than `expiry_s`: id, merchant and mode."""
    c = payments.c
    decided = sa.exists().where(fraud_review_decisions.c.payment_id == c.id)
    query = (
        sa.select(c.id, c.merchant_id, c.livemode)
        .where(
            c.status == Status.REQUIRES_REVIEW.value,
            c.updated < now_s() - expiry_s,
            ~decided,  # a decision already taken is being applied
        )
        .order_by(c.updated)
        .limit(limit)
    )
    return list((await conn.execute(query)).mappings().all())
