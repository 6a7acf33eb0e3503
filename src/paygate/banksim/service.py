"""The bank's operation rules.

The `decide_*` functions are pure: they read the records the operation refers to and say what the
bank answers. `BankService` is the thin part around them: it hashes the request, runs the rule
inside the store's write transaction and hands back the recorded operation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from paygate.banksim import cards
from paygate.banksim.models import DeclineCode, Operation, OperationKind, Status, payment_of
from paygate.banksim.schemas import CaptureIn, PaymentIn, RefundIn, VoidIn
from paygate.banksim.store import Store, StoreView
from paygate.ids import new_id


@dataclass(frozen=True, slots=True)
class Decision:
    """What the bank answers: the status, why not, and the amount and currency it concerns."""

    status: Status
    decline_code: DeclineCode | None
    amount: int
    currency: str | None

    @classmethod
    def approve(cls, amount: int, currency: str | None) -> Decision:
        return cls("approved", None, amount, currency)

    @classmethod
    def decline(cls, code: DeclineCode, amount: int, currency: str | None) -> Decision:
        return cls("declined", code, amount, currency)


def decide_payment(card_code: DeclineCode | None, amount: int, currency: str) -> Decision:
    """Authorize or sale: the issuer's answer for the card decides."""
    if card_code is not None:
        return Decision.decline(card_code, amount, currency)
    return Decision.approve(amount, currency)


def _approved(children: Sequence[Operation], kind: OperationKind) -> list[Operation]:
    return [c for c in children if c.operation == kind and c.approved]


def decide_capture(
    auth: Operation | None, children: Sequence[Operation], amount: int, currency: str | None
) -> Decision:
    """One capture per authorization, at most the authorized amount; the rest is released."""
    if auth is None or auth.operation != "authorize" or not auth.approved:
        return Decision.decline(DeclineCode.UNKNOWN_AUTHORIZATION, amount, currency)
    if currency is not None and currency != auth.currency:
        return Decision.decline(DeclineCode.CURRENCY_MISMATCH, amount, currency)
    if _approved(children, "void"):
        return Decision.decline(DeclineCode.ALREADY_VOIDED, amount, auth.currency)
    if _approved(children, "capture"):
        return Decision.decline(DeclineCode.ALREADY_CAPTURED, amount, auth.currency)
    if amount > auth.amount:
        return Decision.decline(DeclineCode.AMOUNT_EXCEEDS_AUTHORIZED, amount, auth.currency)
    return Decision.approve(amount, auth.currency)


def decide_void(auth: Operation | None, children: Sequence[Operation]) -> Decision:
    """Only an approved authorization that is neither captured nor voided; the amount answered
    is the amount released."""
    if auth is None or auth.operation != "authorize" or not auth.approved:
        amount = auth.amount if auth is not None else 0
        currency = auth.currency if auth is not None else None
        return Decision.decline(DeclineCode.UNKNOWN_AUTHORIZATION, amount, currency)
    if _approved(children, "capture"):
        return Decision.decline(DeclineCode.ALREADY_CAPTURED, auth.amount, auth.currency)
    if _approved(children, "void"):
        return Decision.decline(DeclineCode.ALREADY_VOIDED, auth.amount, auth.currency)
    return Decision.approve(auth.amount, auth.currency)


def refundable(payment: Operation, children: Sequence[Operation]) -> int:
    """What is left to refund of an approved sale or capture."""
    return payment.amount - sum(r.amount for r in _approved(children, "refund"))


def decide_refund(
    payment: Operation | None, children: Sequence[Operation], amount: int, currency: str | None
) -> Decision:
    """Partial and repeated refunds of a sale or capture; their sum never above the amount."""
    if payment is None or payment.operation not in ("sale", "capture") or not payment.approved:
        return Decision.decline(DeclineCode.UNKNOWN_PAYMENT, amount, currency)
    if currency is not None and currency != payment.currency:
        return Decision.decline(DeclineCode.CURRENCY_MISMATCH, amount, currency)
    if amount > refundable(payment, children):
        return Decision.decline(DeclineCode.AMOUNT_EXCEEDS_CAPTURED, amount, payment.currency)
    return Decision.approve(amount, payment.currency)


def request_hash(operation: str, **fields: object) -> str:
    """A digest of what a request asks for, to tell a replay from a reused reference. Card data
    enters only as its keyed fingerprint."""
    canonical = json.dumps({"operation": operation, **fields}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


Applied = tuple[Operation, bool]


class BankService:
    """The five operations and the look-ups, over one store. Each operation returns the recorded
    operation and whether it was a replay of an earlier request under the same reference."""

    def __init__(
        self,
        store: Store,
        *,
        fingerprint_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._fingerprint_key = fingerprint_key
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _record(
        self,
        kind: OperationKind,
        reference: str,
        parent: str | None,
        digest: str,
        decision: Decision,
        card: cards.CardSummary | None = None,
    ) -> Operation:
        return Operation(
            id=new_id("bop"),
            reference=reference,
            payment=payment_of(reference),
            operation=kind,
            parent=parent,
            amount=decision.amount,
            currency=decision.currency,
            status=decision.status,
            decline_code=None if decision.decline_code is None else str(decision.decline_code),
            card_brand=card.brand if card else None,
            card_last4=card.last4 if card else None,
            card_fingerprint=card.fingerprint if card else None,
            request_hash=digest,
            created_ms=self._now_ms(),
        )

    async def pay(self, kind: OperationKind, req: PaymentIn) -> Applied:
        """An authorization or a sale."""
        card = cards.summarize(req.card.number, self._fingerprint_key)
        today = dt.datetime.fromtimestamp(self._clock(), dt.UTC).date()
        code = cards.decline_code(req.card.number, req.card.exp_month, req.card.exp_year, today)
        digest = request_hash(
            kind,
            amount=req.amount,
            currency=req.currency,
            card=card.fingerprint,
            exp=[req.card.exp_month, req.card.exp_year],
        )
        decision = decide_payment(code, req.amount, req.currency)

        def build(_: StoreView) -> Operation:
            return self._record(kind, req.reference, None, digest, decision, card)

        return await self.store.apply(req.reference, kind, digest, build)

    async def capture(self, req: CaptureIn) -> Applied:
        """Capture all or part of an authorization."""
        digest = request_hash(
            "capture", authorization=req.authorization, amount=req.amount, currency=req.currency
        )

        def build(view: StoreView) -> Operation:
            auth = view.get(req.authorization)
            decision = decide_capture(
                auth, view.children(req.authorization), req.amount, req.currency
            )
            return self._record("capture", req.reference, req.authorization, digest, decision)

        return await self.store.apply(req.reference, "capture", digest, build)

    async def void(self, req: VoidIn) -> Applied:
        """Release an uncaptured authorization."""
        digest = request_hash("void", authorization=req.authorization)

        def build(view: StoreView) -> Operation:
            auth = view.get(req.authorization)
            decision = decide_void(auth, view.children(req.authorization))
            return self._record("void", req.reference, req.authorization, digest, decision)

        return await self.store.apply(req.reference, "void", digest, build)

    async def refund(self, req: RefundIn) -> Applied:
        """Refund part or all of what a sale or capture moved."""
        digest = request_hash(
            "refund",
            payment_reference=req.payment_reference,
            amount=req.amount,
            currency=req.currency,
        )

        def build(view: StoreView) -> Operation:
            paid = view.get(req.payment_reference)
            children = view.children(req.payment_reference)
            decision = decide_refund(paid, children, req.amount, req.currency)
            return self._record("refund", req.reference, req.payment_reference, digest, decision)

        return await self.store.apply(req.reference, "refund", digest, build)

    async def lookup(self, reference: str) -> Operation | None:
        """The answer given under `reference`, or None if the bank never applied it."""
        return await self.store.get(reference)

    async def operations_of(self, payment: str) -> list[Operation]:
        """Every operation of one payment, in the order applied."""
        return await self.store.by_payment(payment)
