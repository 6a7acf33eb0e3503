"""The processor: acts on screening decisions and on requested captures, voids and refunds by
driving bank attempts (DESIGN.md sections 1, 2 and 4).

An attempt is recorded (`pending`) in the transaction that decides it, before the bank is
called; the bank's answer and everything it causes (the payment's state, log entries, events)
commit together afterwards. Between the two, a crash or a timeout leaves the attempt open: it is
resolved by looking its reference up at the bank, never by a blind second charge. Every handler
is idempotent: it reloads state, and applies an answer only to an attempt still open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.connectors.base import (
    BankConnector,
    BankResult,
    CaptureRequest,
    Card,
    Outcome,
    PaymentRequest,
    RefundRequest,
    VoidRequest,
)
from paygate.connectors.metered import MeteredConnector
from paygate.fraud import reviews
from paygate.ids import now_s
from paygate.ledger import service as ledger
from paygate.merchants import terms as merchant_terms
from paygate.payments import attempts
from paygate.payments import repository as payments
from paygate.payments.models import FAILURE_CODES, Status
from paygate.payments.service import state_of, transition
from paygate.platform import metrics, outbox
from paygate.platform.bus import Bus, Event
from paygate.platform.db.tables import refunds
from paygate.platform.faults import crash_point
from paygate.platform.logging import log
from paygate.refunds.schemas import render as render_refund
from paygate.runtime import Runtime
from paygate.vault import repository as vault

CUSTOMER_INITIATED = ("authorize", "sale")

Row = Mapping[Any, Any]  # a row as read (RowMapping) or as just written (dict)


class Processor:
    def __init__(self, rt: Runtime, bank: BankConnector) -> None:
        self.rt = rt
        # Timed and counted per operation and outcome (paygate.connectors.metered).
        self.bank: BankConnector = MeteredConnector(bank)
        self.settings = rt.settings

    def register(self, bus: Bus) -> None:
        bus.subscribe(
            "processor",
            [
                "payment.fraud_assessed",
                "payment.capture_requested",
                "payment.cancel_requested",
                "payment.review_rejected",
                "refund.created",
            ],
            self.on_event,
            batch=self.on_events,
        )

    async def on_event(self, event: Event) -> None:
        obj = event["data"]["object"]
        if event["type"] == "payment.fraud_assessed":
            await self.on_assessed(obj["id"], obj["risk"])
        elif event["type"] == "refund.created":
            await self.drive_payment(obj["payment"])
        else:
            await self.drive_payment(obj["id"])

    async def on_events(self, events: list[Event]) -> None:
        """Events that arrive together: their screening decisions applied in one transaction
        (`on_decisions`), every other event beside them; raises once all have finished if any
        raised (the bus then delivers each alone, which is safe: an attempt already open is
        looked up at the bank before any send)."""
        decisions: dict[str, dict[str, Any]] = {}
        others = []
        for event in events:
            if event["type"] == "payment.fraud_assessed":
                obj = event["data"]["object"]
                decisions.setdefault(obj["id"], obj["risk"])
            else:
                others.append(self.on_event(event))
        await _all([self.on_decisions(decisions), *others])

    # Screening decisions

    async def on_assessed(self, payment_id: str, risk: dict[str, Any]) -> None:
        await self.on_decisions({payment_id: risk})

    async def on_decisions(self, decisions: dict[str, dict[str, Any]]) -> None:
        """Screening decisions by payment id, applied in one transaction, then their bank calls
        side by side. Decline fails the payment with no bank call; approve and review start the
        bank operation: a sale when the payment captures at once, else an authorization."""
        if not decisions:
            return
        started: list[tuple[dict[str, Any], sa.RowMapping]] = []
        async with self.rt.db.transaction() as conn:
            rows = await payments.get_many(conn, list(decisions), for_update=True)
            for payment_id, risk in decisions.items():
                row = rows.get(payment_id)
                if row is not None and row["status"] == Status.PENDING:
                    created = await self._decide(conn, row, risk)
                    if created is not None:
                        started.append((created, row))
        driven = {attempt["payment_id"] for attempt, _ in started}
        # A payment now `processing` is on its way: its waiters wake for the bank's answer.
        self.rt.changed(*driven, news=False)
        self.rt.changed(*(pid for pid in decisions if pid not in driven))
        await _all(
            [
                *(self.drive(a["id"], fresh=True, attempt=a, payment=row) for a, row in started),
                # A redelivery, or a decline: resume whatever attempt was left open.
                *(self.drive_payment(pid) for pid in decisions if pid not in driven),
            ]
        )

    async def _decide(
        self, conn: AsyncConnection, row: sa.RowMapping, risk: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Apply one decision to a pending payment; the attempt to send, if any."""
        if risk["decision"] == "decline":
            metrics.fraud_decided(conn, "decline")
            await transition(
                conn,
                row,
                state_of(row).fail("fraud_suspected"),
                event="payment.failed",
                extra={"risk": risk},
                details={"risk": risk},
            )
            await vault.destroy_cvc(conn, row["id"])
            return None
        metrics.fraud_decided(conn, risk["decision"])
        await transition(
            conn,
            row,
            state_of(row).start_processing(),
            event="payment.processing",
            extra={"risk": risk},
            details={"risk": risk},
        )
        sale = row["capture"] and risk["decision"] == "approve"
        return await attempts.create(
            conn,
            payment_id=row["id"],
            operation="sale" if sale else "authorize",
            amount=row["amount"],
            currency=row["currency"],
        )

    # Driving attempts

    async def drive_payment(self, payment_id: str) -> None:
        """Resume every open attempt of a payment (after a redelivery or a restart)."""
        async with self.rt.db.read() as conn:
            open_ids = [a["id"] for a in await attempts.open_for_payment(conn, payment_id)]
        for attempt_id in open_ids:
            await self.drive(attempt_id, fresh=False)

    async def drive(
        self,
        attempt_id: str,
        *,
        fresh: bool,
        attempt: Row | None = None,
        payment: Row | None = None,
    ) -> None:
        """Call the bank for one attempt and apply its answer. An attempt that may already have
        reached the bank (`fresh` false) is looked up first and sent only if the bank never saw
        it. A caller that has just written the attempt passes its row (`attempt`), and its
        payment's (`payment`), which then are not read again before the call."""
        if attempt is None:
            async with self.rt.db.read() as conn:
                attempt = await attempts.get(conn, attempt_id)
        if attempt is None or attempt["status"] not in attempts.OPEN:
            return
        result: BankResult | None = None
        if not fresh:
            result = await self.bank.lookup(attempt["reference"])
            if result.outcome is Outcome.NOT_FOUND:
                result = None if await self._may_send(attempt) else result
        if result is None:
            request = await self._request(attempt, payment)
            result = await _send(self.bank, attempt["operation"], request)
        crash_point("processor.after_bank_call")
        followups = await self.apply(attempt, result)
        for followup in followups:
            await self.drive(followup, fresh=True)

    async def _may_send(self, attempt: Row) -> bool:
        """A customer-initiated operation is not sent once its payment has failed (the deadline
        passed); everything else is sent until the bank answers."""
        if attempt["operation"] not in CUSTOMER_INITIATED:
            return True
        async with self.rt.db.read() as conn:
            row = await payments.get_by_id(conn, attempt["payment_id"])
        return row is not None and row["status"] == Status.PROCESSING

    async def _request(self, attempt: Row, payment: Row | None) -> object:
        pid, op, ref = attempt["payment_id"], attempt["operation"], attempt["reference"]
        if op in CUSTOMER_INITIATED:
            async with self.rt.db.read() as conn:
                row = payment
                if row is None or row["id"] != pid:
                    row = await payments.get_by_id(conn, pid)
                assert row is not None
                number = await vault.reveal_method_card(
                    conn, self.rt.keyring, row["payment_method_id"]
                )
                cvc = await vault.read_cvc(conn, self.rt.keyring, pid)
            card = row["payment_method"]["card"]
            return PaymentRequest(
                ref,
                attempt["amount"],
                attempt["currency"],
                Card(number, card["exp_month"], card["exp_year"], cvc),
            )
        if op == "capture":
            return CaptureRequest(ref, attempts.reference(pid, "authorize"), attempt["amount"])
        if op == "void":
            return VoidRequest(ref, attempts.reference(pid, "authorize"))
        async with self.rt.db.read() as conn:
            done = {
                a["operation"]
                for a in await attempts.for_payment(conn, pid)
                if a["status"] == "succeeded"
            }
        charged = "sale" if "sale" in done else "capture"
        return RefundRequest(ref, attempts.reference(pid, charged), attempt["amount"])

    # Applying the bank's answer

    async def apply(self, sent: Row, result: BankResult) -> list[str]:
        """Commit what the bank's answer means for the attempt `sent` (its row as read before
        the call); returns follow-up attempts to drive (voids of late authorizations,
        reversals)."""
        followups: list[str] = []
        async with self.rt.db.transaction() as conn:
            row = await payments.get_by_id(conn, sent["payment_id"], for_update=True)
            attempt = await attempts.get(conn, sent["id"])  # read under the payment's lock
            if row is None or attempt is None or attempt["status"] not in attempts.OPEN:
                return []
            if result.outcome.final or _already_done(attempt, result):
                followups = await self._apply_final(conn, attempt, row, result)
            elif result.outcome is Outcome.NOT_FOUND and row["status"] != Status.PROCESSING:
                await self._close_unapplied(conn, attempt, row)
            else:
                await self._apply_open(conn, attempt, row, result)
        self.rt.changed(attempt["payment_id"])
        if attempt["refund_id"]:
            self.rt.changed(attempt["refund_id"])
        return followups

    async def _apply_open(
        self, conn: AsyncConnection, attempt: sa.RowMapping, row: sa.RowMapping, result: BankResult
    ) -> None:
        """No answer yet: keep the attempt open and schedule the next look. A customer-initiated
        payment fails once its deadline passes; its attempt stays open until the bank can say
        whether it was applied (a late authorization is then voided, a late sale refunded).

        Even a `pending` attempt stays open: it proves nothing about the bank, since a worker that
        died between its bank call and its commit leaves exactly that behind."""
        tries = attempt["tries"] + 1
        unknown = result.outcome is Outcome.UNKNOWN or attempt["status"] == "unknown"
        schedule = attempts.UNKNOWN_BACKOFF_S if unknown else attempts.UNAVAILABLE_BACKOFF_S
        next_at = time.time() + attempts.backoff(
            schedule, tries - 1, self.settings.recovery_backoff_scale
        )
        status = "unknown" if unknown else "pending"
        op = attempt["operation"]
        if op in CUSTOMER_INITIATED and row["status"] == Status.PROCESSING:
            deadline = row["created"] + self.settings.auth_deadline_s
            if time.time() >= deadline:
                await payments.log(
                    conn,
                    row["id"],
                    f"bank.{op}",
                    row["status"],
                    attempt["amount"],
                    {"reference": attempt["reference"], "outcome": "deadline"},
                )
                await transition(
                    conn, row, state_of(row).fail("processing_error"), event="payment.failed"
                )
                await vault.destroy_cvc(conn, row["id"])
            else:
                next_at = min(next_at, deadline)
        if attempt["status"] != "unknown" and unknown:
            await payments.log(
                conn,
                row["id"],
                f"bank.{op}",
                row["status"],
                attempt["amount"],
                {"reference": attempt["reference"], "outcome": "unknown"},
            )
        await attempts.update(
            conn, attempt["id"], status=status, tries=tries, next_check_at=next_at
        )
        log.info(
            "bank.attempt_open",
            payment_id=row["id"],
            reference=attempt["reference"],
            outcome=str(result.outcome),
            tries=tries,
            detail=result.detail,
        )

    async def _close_unapplied(
        self, conn: AsyncConnection, attempt: sa.RowMapping, row: sa.RowMapping
    ) -> None:
        """The bank never applied a customer-initiated attempt whose payment has failed, and it
        will not be sent any more (`_may_send`): close it, so that it is not looked up forever."""
        await attempts.update(
            conn,
            attempt["id"],
            status="failed",
            failure_code="processing_error",
            tries=attempt["tries"] + 1,
        )
        await payments.log(
            conn,
            row["id"],
            f"bank.{attempt['operation']}",
            row["status"],
            attempt["amount"],
            {"reference": attempt["reference"], "outcome": "not_applied"},
        )

    async def _apply_final(
        self, conn: AsyncConnection, attempt: sa.RowMapping, row: sa.RowMapping, result: BankResult
    ) -> list[str]:
        op = attempt["operation"]
        approved = result.approved or _already_done(attempt, result)
        code = None if approved else (result.failure_code or "processing_error")
        await attempts.update(
            conn,
            attempt["id"],
            status="succeeded" if approved else "failed",
            failure_code=code,
            tries=attempt["tries"] + 1,
        )
        await payments.log(
            conn,
            row["id"],
            f"bank.{op}",
            row["status"],
            attempt["amount"],
            {
                "reference": attempt["reference"],
                "outcome": "approved" if approved else "declined",
                "failure_code": code,
            },
        )
        state = state_of(row)
        status = state.status
        if op in CUSTOMER_INITIATED:
            await vault.destroy_cvc(conn, row["id"])
            if status != Status.PROCESSING:
                # The payment failed at its deadline; an approval that lands later is undone.
                return [await self._reverse(conn, row, op)] if approved else []
            if not approved:
                failure = code if code in FAILURE_CODES else "processing_error"
                await transition(conn, row, state.fail(failure), event="payment.failed")
            elif op == "sale":
                await transition(
                    conn, row, state.captured(attempt["amount"]), event="payment.succeeded"
                )
                await self._book_capture(conn, row, attempt["amount"])
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
                await self._book_capture(conn, row, attempt["amount"])
            elif not approved and status in held:
                # Refused for good: release the authorization and fail the payment.
                await transition(conn, row, state.fail("processing_error"), event="payment.failed")
                return [await self._reverse(conn, row, "authorize")]
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
        await self._settle_refund(conn, attempt, row, approved, code)
        return []

    async def _book_capture(self, conn: AsyncConnection, row: sa.RowMapping, amount: int) -> None:
        """The ledger entry of captured money, in the transaction of the capture itself, at the
        merchant's own pricing and payout delay."""
        terms = await merchant_terms.terms_for(
            conn, row["merchant_id"], self.settings.payout_delay_days
        )
        await ledger.record_capture(
            conn, row, amount, pricing=terms.pricing, payout_delay_days=terms.payout_delay_days
        )

    async def _reverse(self, conn: AsyncConnection, row: sa.RowMapping, op: str) -> str:
        """Undo an approval the payment no longer wants: void an authorization, refund a sale."""
        if op == "sale":
            return await attempts.ensure(
                conn,
                payment_id=row["id"],
                operation="refund",
                amount=row["amount"],
                currency=row["currency"],
                ref_suffix="reversal",
            )
        return await attempts.ensure(
            conn,
            payment_id=row["id"],
            operation="void",
            amount=row["amount"],
            currency=row["currency"],
        )

    async def _settle_refund(
        self,
        conn: AsyncConnection,
        attempt: sa.RowMapping,
        row: sa.RowMapping,
        approved: bool,
        code: str | None,
    ) -> None:
        refund_id = attempt["refund_id"]
        if refund_id is None:
            return  # a reversal of a late sale: the payment already failed
        refund = (
            (await conn.execute(sa.select(refunds).where(refunds.c.id == refund_id)))
            .mappings()
            .one()
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
        terms = await merchant_terms.terms_for(
            conn, row["merchant_id"], self.settings.payout_delay_days
        )
        await ledger.record_refund_result(
            conn, refund, row, succeeded=approved, pricing=terms.pricing
        )
        obj = render_refund({**refund, "status": status, "failure_code": failure})
        await outbox.emit(
            conn, type=f"refund.{status}", obj=obj, merchant_id=row["merchant_id"], sequence=version
        )


async def _all(work: list[Coroutine[Any, Any, None]]) -> None:
    """Run `work` side by side to the end; then raise the first error, if any."""
    for outcome in await asyncio.gather(*work, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _already_done(attempt: sa.RowMapping, result: BankResult) -> bool:
    """A void the bank says was already applied counts as applied."""
    return (
        attempt["operation"] == "void"
        and result.outcome is Outcome.DECLINED
        and result.failure_code == "already_voided"
    )


async def _send(bank: BankConnector, operation: str, request: object) -> BankResult:
    if operation == "authorize":
        assert isinstance(request, PaymentRequest)
        return await bank.authorize(request)
    if operation == "sale":
        assert isinstance(request, PaymentRequest)
        return await bank.sale(request)
    if operation == "capture":
        assert isinstance(request, CaptureRequest)
        return await bank.capture(request)
    if operation == "void":
        assert isinstance(request, VoidRequest)
        return await bank.void(request)
    assert isinstance(request, RefundRequest)
    return await bank.refund(request)
