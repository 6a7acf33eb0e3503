"""The processor: acts on screening decisions and on requested captures, voids and refunds by
driving bank attempts (DESIGN.md sections 1, 2 and 4).

An attempt is recorded (`pending`) in the transaction that decides it, before the bank is
called; the bank's answer and everything it causes (the payment's state, log entries, events)
commit together afterwards. Between the two, a crash or a timeout leaves the attempt open: it is
resolved by looking its reference up at the bank, never by a blind second charge. Every handler
is idempotent: it reloads state, and applies an answer only to an attempt still open. What an
answer means is `answers.py`.
"""

from __future__ import annotations

import asyncio
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
from paygate.merchants.terms import LOCKED_PAYMENTS_WITH_TERMS, Terms, joined_terms
from paygate.payments import attempts
from paygate.payments import repository as payments
from paygate.payments.models import Status
from paygate.payments.service import state_of, transition
from paygate.platform import metrics, tracing
from paygate.platform.bus import Bus, Event
from paygate.platform.coalesce import Coalescer, Submission
from paygate.platform.db import deferred, written
from paygate.platform.faults import crash_point
from paygate.platform.logging import log
from paygate.platform.tasks import reraise_if_cancelling
from paygate.processor import answers
from paygate.processor.answers import CUSTOMER_INITIATED
from paygate.runtime import Runtime
from paygate.vault import repository as vault

Row = Mapping[Any, Any]  # a row as read (RowMapping) or as just written (dict)
Answer = Submission[tuple[Row, BankResult], list[str]]  # the bank's answer to an attempt sent


class Processor:
    def __init__(self, rt: Runtime, bank: BankConnector) -> None:
        self.rt = rt
        # Timed and counted per operation and outcome (paygate.connectors.metered).
        self.bank: BankConnector = MeteredConnector(bank)
        self.settings = rt.settings
        self._answers: Coalescer[tuple[Row, BankResult], list[str]] = Coalescer(
            self._apply_batch, key=lambda answer: answer[0]["payment_id"]
        )

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
                others.append(_scoped(tracing.payment_of(event), self.on_event(event)))
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
        with written.versions() as versions:
            async with self.rt.db.transaction() as conn, deferred.deferred(conn):
                rows = await payments.get_many(conn, list(decisions), for_update=True)
                for payment_id, risk in decisions.items():
                    row = rows.get(payment_id)
                    if row is not None and row["status"] == Status.PENDING:
                        with tracing.payment_scope(payment_id):  # its events stay in its trace
                            created = await self._decide(conn, row, risk)
                        if created is not None:
                            started.append((created, row))
        driven = {attempt["payment_id"] for attempt, _ in started}
        rest = [pid for pid in decisions if pid not in driven]  # declined, or not pending
        # A payment now `processing` is on its way: its waiters wake for the bank's answer.
        self.rt.changed(*driven, news=False, versions=versions)
        if rest:
            self.rt.changed(*rest, versions=versions)
        requests = await self._card_requests(started) if started else {}
        await _all(
            [
                *(
                    _scoped(
                        a["payment_id"],
                        self.drive(a["id"], fresh=True, attempt=a, request=requests.get(a["id"])),
                    )
                    for a, _ in started
                ),
                # A redelivery, or a decline: resume whatever attempt was left open.
                *(_scoped(pid, self.drive_payment(pid)) for pid in rest),
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
            defer=True,  # in the batch's one insert (`on_decisions`)
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
        request: object | None = None,
    ) -> None:
        """Call the bank for one attempt and apply its answer. An attempt that may already have
        reached the bank (`fresh` false) is looked up first and sent only if the bank never saw
        it. A caller that has just written the attempt passes its row (`attempt`), and may pass
        the bank request built for it (`request`), which then are not read again."""
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
            if request is None:
                request = await self._request(attempt)
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

    async def _card_requests(
        self, started: list[tuple[dict[str, Any], sa.RowMapping]]
    ) -> dict[str, PaymentRequest]:
        """The bank requests of attempts just opened (with their payments' rows as locked), by
        attempt id: every card number and CVC of the batch read in one statement. A card not
        found is left out: that attempt's own `_request` then fails alone."""
        async with self.rt.db.read() as conn:
            cards = await vault.reveal_payment_cards(
                conn, self.rt.keyring, [row["id"] for _, row in started]
            )
        return {
            attempt["id"]: _card_request(attempt, row, *cards[row["id"]])
            for attempt, row in started
            if row["id"] in cards
        }

    async def _request(self, attempt: Row) -> object:
        pid, op, ref = attempt["payment_id"], attempt["operation"], attempt["reference"]
        if op in CUSTOMER_INITIATED:
            async with self.rt.db.read() as conn:
                row = await payments.get_by_id(conn, pid)
                assert row is not None
                number, cvc = (await vault.reveal_payment_cards(conn, self.rt.keyring, [pid]))[pid]
            return _card_request(attempt, row, number, cvc)
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
        reversals). Answers that come back while others are being applied wait, and are
        applied together in one transaction (`_apply_batch`)."""
        return await self._answers.submit((sent, result))

    async def wait_idle(self) -> None:
        """Return once every answer handed to `apply` so far has been applied."""
        await self._answers.wait_idle()

    async def _apply_batch(self, batch: list[Answer]) -> list[list[str] | BaseException]:
        """Apply a batch of answers in one transaction. If it fails, each is applied again in
        a transaction of its own, so that one bad answer fails alone."""
        try:
            return list(await self._apply_together(batch))
        except Exception as exc:
            reraise_if_cancelling(exc)
            if len(batch) == 1:
                return [exc]
            log.warning(
                "processor.batch_apply_failed",
                size=len(batch),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        alone = await asyncio.gather(
            *(self._apply_together([item]) for item in batch), return_exceptions=True
        )
        return [o if isinstance(o, BaseException) else o[0] for o in alone]

    async def _apply_together(self, batch: list[Answer]) -> list[list[str]]:
        sent = [item.value[0] for item in batch]
        terms: dict[str, Terms] = {}  # each merchant's, read with the lock below
        # The log entries, events and ledger rows of the batch go as one insert per table.
        versions: dict[str, int] = {}  # what the batch writes, each answer in its own context
        async with self.rt.db.transaction() as conn, deferred.deferred(conn):
            # The payments are locked in id order, as by every locker of several payments, with
            # their merchants' terms; the attempts are read under those locks.
            locked = {"match_ids": [a["payment_id"] for a in sent]}
            rows = {
                row["id"]: row
                for row in (await conn.execute(LOCKED_PAYMENTS_WITH_TERMS, locked)).mappings()
            }
            for row in rows.values():
                if row["merchant_id"] not in terms:
                    terms[row["merchant_id"]] = joined_terms(row, self.settings.payout_delay_days)
            found = await attempts.get_many(conn, [a["id"] for a in sent])
            outcomes = [
                await item.within(
                    written.recorded(
                        versions,
                        self._answer(
                            conn,
                            rows.get(a["payment_id"]),
                            found.get(a["id"]),
                            item.value[1],
                            terms,
                        ),
                    )
                )
                for item, a in zip(batch, sent, strict=True)
            ]
        # One call for the batch: its cached reads are dropped at the versions it wrote.
        applied = [a for a, done in zip(sent, outcomes, strict=True) if done is not None]
        self._changed(*applied, versions=versions)
        return [outcome or [] for outcome in outcomes]

    async def _answer(
        self,
        conn: AsyncConnection,
        row: sa.RowMapping | None,
        attempt: sa.RowMapping | None,
        result: BankResult,
        terms: dict[str, Terms],
    ) -> list[str] | None:
        """Apply one answer to its attempt, read under its payment's lock (`row`); the
        follow-ups, or None when the attempt was no longer open. `terms`: the merchants'
        terms the transaction has read so far."""
        if row is None or attempt is None or attempt["status"] not in attempts.OPEN:
            return None
        if result.outcome.final or answers.already_done(attempt, result):
            return await answers.apply_final(self.settings, conn, attempt, row, result, terms=terms)
        if result.outcome is Outcome.NOT_FOUND and row["status"] != Status.PROCESSING:
            await answers.close_unapplied(conn, attempt, row)
        else:
            await answers.apply_open(self.settings, conn, attempt, row, result)
        return []

    def _changed(self, *applied: Row, versions: Mapping[str, int] | None = None) -> None:
        """The payments (and refunds) of attempts whose answers committed have changed
        (`versions`: as their transaction wrote them, where known)."""
        ids = [i for a in applied for i in (a["payment_id"], a["refund_id"]) if i]
        if ids:
            self.rt.changed(*ids, versions=versions)


async def _all(work: list[Coroutine[Any, Any, None]]) -> None:
    """Run `work` side by side to the end; then raise the first error, if any."""
    for outcome in await asyncio.gather(*work, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _scoped(payment_id: str | None, work: Coroutine[Any, Any, None]) -> None:
    """`work`, about one payment of a batch, in that payment's trace (`tracing.payment_scope`):
    run as a task of its own (`_all`), it leaves no other payment's work in that scope."""
    if payment_id is None:
        await work
        return
    with tracing.payment_scope(payment_id):
        await work


def _card_request(attempt: Row, payment: Row, number: str, cvc: str | None) -> PaymentRequest:
    card = payment["payment_method"]["card"]
    return PaymentRequest(
        attempt["reference"],
        attempt["amount"],
        attempt["currency"],
        Card(number, card["exp_month"], card["exp_year"], cvc),
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
