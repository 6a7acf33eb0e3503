"""What the bank's answer to an attempt means, applied inside the transaction that records it
(`Processor.apply` opens it, with the payment locked): an open attempt rescheduled, a final answer
moving the payment, booking the ledger and queueing any reversal, a refund settled."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.config import Settings
from paygate.connectors.base import BankResult, Outcome
from paygate.fraud import reviews
from paygate.ids import now_s
from paygate.ledger import service as ledger
from paygate.merchants import terms as merchant_terms
from paygate.payments import attempts
from paygate.payments import repository as payments
from paygate.payments.models import FAILURE_CODES, Status
from paygate.payments.service import state_of, transition
from paygate.platform import outbox
from paygate.platform.db import written
from paygate.platform.db.tables import refunds
from paygate.platform.logging import log
from paygate.refunds.schemas import render as render_refund
from paygate.vault import repository as vault

CUSTOMER_INITIATED = ("authorize", "sale")


async def apply_open(
    settings: Settings,
    conn: AsyncConnection,
    attempt: sa.RowMapping,
    row: sa.RowMapping,
    result: BankResult,
) -> None:
    """No answer yet: keep the attempt open and schedule the next look. A customer-initiated
    payment fails once its deadline passes; its attempt stays open until the bank can say
    whether it was applied (a late authorization is then voided, a late sale refunded).

    Even a `pending` attempt stays open: it proves nothing about the bank, since a worker that
    died between its bank call and its commit leaves exactly that behind."""
    tries = attempt["tries"] + 1
    unknown = result.outcome is Outcome.UNKNOWN or attempt["status"] == "unknown"
    schedule = attempts.UNKNOWN_BACKOFF_S if unknown else attempts.UNAVAILABLE_BACKOFF_S
    next_at = time.time() + attempts.backoff(schedule, tries - 1, settings.recovery_backoff_scale)
    status = "unknown" if unknown else "pending"
    op = attempt["operation"]
    if op in CUSTOMER_INITIATED and row["status"] == Status.PROCESSING:
        deadline = row["created"] + settings.auth_deadline_s
        if time.time() >= deadline:
            await _log_answer(conn, attempt, row, "deadline")
            await transition(
                conn, row, state_of(row).fail("processing_error"), event="payment.failed"
            )
            await vault.destroy_cvc(conn, row["id"])
        else:
            next_at = min(next_at, deadline)
    if attempt["status"] != "unknown" and unknown:
        await _log_answer(conn, attempt, row, "unknown")
    await attempts.update(conn, attempt["id"], status=status, tries=tries, next_check_at=next_at)
    log.info(
        "bank.attempt_open",
        payment_id=row["id"],
        reference=attempt["reference"],
        outcome=str(result.outcome),
        tries=tries,
        detail=result.detail,
    )


async def close_unapplied(
    conn: AsyncConnection, attempt: sa.RowMapping, row: sa.RowMapping
) -> None:
    """The bank never applied a customer-initiated attempt whose payment has failed, and it
    will not be sent any more (`Processor._may_send`): close it, so that it is not looked up
    forever."""
    await attempts.update(
        conn,
        attempt["id"],
        status="failed",
        failure_code="processing_error",
        tries=attempt["tries"] + 1,
    )
    await _log_answer(conn, attempt, row, "not_applied")


async def apply_final(
    settings: Settings,
    conn: AsyncConnection,
    attempt: sa.RowMapping,
    row: sa.RowMapping,
    result: BankResult,
    *,
    terms: dict[str, merchant_terms.Terms] | None = None,
) -> list[str]:
    """`terms`: the merchants' terms this transaction has read so far, which the ledger's
    entries join (`merchant_terms.terms_for`)."""
    op = attempt["operation"]
    approved = result.approved or already_done(attempt, result)
    code = None if approved else (result.failure_code or "processing_error")
    await attempts.update(
        conn,
        attempt["id"],
        status="succeeded" if approved else "failed",
        failure_code=code,
        tries=attempt["tries"] + 1,
    )
    await _log_answer(conn, attempt, row, "approved" if approved else "declined", failure_code=code)
    state = state_of(row)
    status = state.status
    if op in CUSTOMER_INITIATED:
        await vault.destroy_cvc(conn, row["id"])
        if status != Status.PROCESSING:
            # The payment failed at its deadline; an approval that lands later is undone.
            return [await _reverse(conn, row, op)] if approved else []
        if not approved:
            failure = code if code in FAILURE_CODES else "processing_error"
            await transition(conn, row, state.fail(failure), event="payment.failed")
        elif op == "sale":
            await transition(
                conn, row, state.captured(attempt["amount"]), event="payment.succeeded"
            )
            await _book_capture(settings, conn, row, attempt["amount"], terms)
        else:
            review = (row["risk"] or {}).get("decision") == "review"
            new = state.authorized(review=review)
            await transition(conn, row, new, event=f"payment.{new.status}")
        return []
    if op == "capture":
        held = (Status.REQUIRES_CAPTURE, Status.REQUIRES_REVIEW)
        if approved and status in held:
            # A payment under review is captured once its review was approved.
            captured = (
                state.approve_review()
                if status == Status.REQUIRES_REVIEW
                else state.captured(attempt["amount"])
            )
            await transition(conn, row, captured, event="payment.succeeded")
            await _book_capture(settings, conn, row, attempt["amount"], terms)
        elif not approved and status in held:
            # Refused for good: release the authorization and fail the payment.
            await transition(conn, row, state.fail("processing_error"), event="payment.failed")
            return [await _reverse(conn, row, "authorize")]
        return []
    if op == "void":
        if (
            approved
            and status == Status.REQUIRES_REVIEW
            and await reviews.rejected(conn, row["id"])
        ):
            await transition(conn, row, state.fail("fraud_suspected"), event="payment.failed")
        elif approved and status in (Status.REQUIRES_CAPTURE, Status.REQUIRES_REVIEW):
            await transition(conn, row, state.cancel(), event="payment.canceled")
        return []
    await _settle_refund(settings, conn, attempt, row, approved, code, terms)
    return []


async def _book_capture(
    settings: Settings,
    conn: AsyncConnection,
    row: sa.RowMapping,
    amount: int,
    read: dict[str, merchant_terms.Terms] | None,
) -> None:
    """The ledger entry of captured money, in the transaction of the capture itself, at the
    merchant's own pricing and payout delay."""
    terms = await merchant_terms.terms_for(
        conn, row["merchant_id"], settings.payout_delay_days, read
    )
    await ledger.record_capture(
        conn, row, amount, pricing=terms.pricing, payout_delay_days=terms.payout_delay_days
    )


async def _reverse(conn: AsyncConnection, row: sa.RowMapping, op: str) -> str:
    """Undo an approval the payment no longer wants: void an authorization, refund a sale."""
    operation, suffix = ("refund", "reversal") if op == "sale" else ("void", None)
    return await attempts.ensure(
        conn,
        payment_id=row["id"],
        operation=operation,
        amount=row["amount"],
        currency=row["currency"],
        ref_suffix=suffix,
    )


async def _settle_refund(
    settings: Settings,
    conn: AsyncConnection,
    attempt: sa.RowMapping,
    row: sa.RowMapping,
    approved: bool,
    code: str | None,
    read: dict[str, merchant_terms.Terms] | None,
) -> None:
    refund_id = attempt["refund_id"]
    if refund_id is None:
        return  # a reversal of a late sale: the payment already failed
    refund = (
        (await conn.execute(sa.select(refunds).where(refunds.c.id == refund_id))).mappings().one()
    )
    settled = state_of(row).refund_settled(attempt["amount"], succeeded=approved)
    await transition(
        conn,
        row,
        settled,
        event=None,
        log_type="refund.succeeded" if approved else "refund.failed",
        details={"refund": refund_id},
    )
    status = "succeeded" if approved else "failed"
    failure = None if approved else (code if code in FAILURE_CODES else "processing_error")
    version = refund["version"] + 1
    await conn.execute(
        refunds.update()
        .where(refunds.c.id == refund_id)
        .values(status=status, failure_code=failure, version=version, updated=now_s())
    )
    written.record(refund_id, version)
    terms = await merchant_terms.terms_for(
        conn, row["merchant_id"], settings.payout_delay_days, read
    )
    await ledger.record_refund_result(conn, refund, row, succeeded=approved, pricing=terms.pricing)
    obj = render_refund({**refund, "status": status, "failure_code": failure})
    await outbox.emit(
        conn, type=f"refund.{status}", obj=obj, merchant_id=row["merchant_id"], sequence=version
    )


async def _log_answer(
    conn: AsyncConnection,
    attempt: sa.RowMapping,
    row: sa.RowMapping,
    outcome: str,
    **more: str | None,
) -> None:
    """The payment's transaction-log entry of what became of an attempt at the bank."""
    details = {"reference": attempt["reference"], "outcome": outcome, **more}
    await payments.log(
        conn, row["id"], f"bank.{attempt['operation']}", row["status"], attempt["amount"], details
    )


def already_done(attempt: sa.RowMapping, result: BankResult) -> bool:
    """A void the bank says was already applied counts as applied."""
    return (
        attempt["operation"] == "void"
        and result.outcome is Outcome.DECLINED
        and result.failure_code == "already_voided"
    )
