"""The payment state machine of DESIGN.md section 4, pure: no I/O, no framework.

Every change is a method of `PaymentState` that returns the next state or raises
`TransitionRefused`; `ALLOWED` is the contract table, and the property tests check that no
sequence of operations leaves it, and that refunds never exceed what was captured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"  # reserved for 3-D Secure
    REQUIRES_REVIEW = "requires_review"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


S = Status

# The states a payment can rest in: `Prefer: wait` answers once a payment reaches one of these.
RESTING = frozenset({S.SUCCEEDED, S.FAILED, S.REQUIRES_CAPTURE, S.REQUIRES_REVIEW, S.CANCELED})

# (from, to) pairs of the contract table.
ALLOWED: frozenset[tuple[Status, Status]] = frozenset(
    {
        (S.PENDING, S.FAILED),
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.CANCELED),
        (S.PROCESSING, S.SUCCEEDED),
        (S.PROCESSING, S.REQUIRES_CAPTURE),
        (S.PROCESSING, S.REQUIRES_REVIEW),
        (S.PROCESSING, S.FAILED),
        (S.REQUIRES_REVIEW, S.SUCCEEDED),
        (S.REQUIRES_REVIEW, S.REQUIRES_CAPTURE),
        (S.REQUIRES_REVIEW, S.FAILED),
        (S.REQUIRES_REVIEW, S.CANCELED),
        (S.REQUIRES_CAPTURE, S.CANCELED),
        (S.REQUIRES_CAPTURE, S.SUCCEEDED),
        # A capture the bank refuses for good voids the authorization and fails the payment.
        (S.REQUIRES_CAPTURE, S.FAILED),
        (S.SUCCEEDED, S.SUCCEEDED),
    }
)

FAILURE_CODES = frozenset(
    {
        "card_declined",
        "insufficient_funds",
        "expired_card",
        "incorrect_cvc",
        "processing_error",
        "lost_card",
        "stolen_card",
        "fraud_suspected",
    }
)

FAILURE_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card has insufficient funds.",
    "expired_card": "The card has expired.",
    "incorrect_cvc": "The card's security code is incorrect.",
    "processing_error": "An error occurred while processing the card.",
    "lost_card": "The card was declined.",
    "stolen_card": "The card was declined.",
    "fraud_suspected": "The payment was blocked as likely fraudulent.",
}


class TransitionRefused(Exception):
    """The payment's state does not allow the operation."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class PaymentState:
    status: Status
    amount: int
    capture: bool
    amount_capturable: int = 0
    amount_captured: int = 0
    amount_refunded: int = 0
    amount_refund_pending: int = 0
    failure_code: str | None = None

    @property
    def refundable(self) -> int:
        """What may still be refunded: captured, less refunded, less reserved by pending refunds."""
        return self.amount_captured - self.amount_refunded - self.amount_refund_pending

    def _to(self, status: Status, **changes: object) -> PaymentState:
        if (self.status, status) not in ALLOWED:
            raise TransitionRefused(f"A payment in status {self.status} cannot become {status}.")
        return replace(self, status=status, **changes)  # type: ignore[arg-type]

    # Fraud screening
    def start_processing(self) -> PaymentState:
        return self._to(S.PROCESSING)

    def fail(self, code: str) -> PaymentState:
        """A decline: by fraud screening (`pending`), by the bank (`processing`), or a review
        rejected (`requires_review`). Nothing stays capturable."""
        if code not in FAILURE_CODES:
            raise ValueError(f"unknown failure code {code!r}")
        return self._to(S.FAILED, failure_code=code, amount_capturable=0)

    # Bank outcomes
    def authorized(self, *, review: bool) -> PaymentState:
        """The bank approved an authorization; the capture waits for a person or the merchant."""
        if self.status != S.PROCESSING:
            raise TransitionRefused(f"A payment in status {self.status} is not being authorized.")
        target = S.REQUIRES_REVIEW if review else S.REQUIRES_CAPTURE
        return self._to(target, amount_capturable=self.amount)

    def captured(self, amount: int | None = None) -> PaymentState:
        """A sale, or a capture of `amount` (≤ capturable) of an authorization; the rest is
        released. A payment under review is captured only through `approve_review`."""
        if self.status == S.REQUIRES_REVIEW:
            raise TransitionRefused("A payment under review is captured only once approved.")
        return self._capture(amount)

    def _capture(self, amount: int | None) -> PaymentState:
        if self.status == S.PROCESSING:
            amount = self.amount if amount is None else amount
            limit = self.amount
        else:
            limit = self.amount_capturable
            amount = limit if amount is None else amount
        if not 0 < amount <= limit:
            raise TransitionRefused(
                f"The capture amount must be between 1 and {limit}.", param="amount"
            )
        return self._to(S.SUCCEEDED, amount_captured=amount, amount_capturable=0)

    def check_capture(self, amount: int | None) -> int:
        """Validate a merchant's capture request; returns the amount to capture."""
        if self.status != S.REQUIRES_CAPTURE:
            raise TransitionRefused(f"A payment in status {self.status} cannot be captured.")
        amount = self.amount_capturable if amount is None else amount
        if not 0 < amount <= self.amount_capturable:
            raise TransitionRefused(
                f"The capture amount must be between 1 and {self.amount_capturable}.",
                param="amount",
            )
        return amount

    def approve_review(self) -> PaymentState:
        """A person approved the review: capture now, or wait for the merchant's capture."""
        if self.status != S.REQUIRES_REVIEW:
            raise TransitionRefused(f"A payment in status {self.status} is not under review.")
        if self.capture:
            return self._capture(None)
        return self._to(S.REQUIRES_CAPTURE)

    def cancel(self) -> PaymentState:
        return self._to(S.CANCELED, amount_capturable=0)

    # Refunds
    def reserve_refund(self, amount: int | None) -> tuple[PaymentState, int]:
        """Reserve a refund of `amount` (default: all that is refundable)."""
        if self.status != S.SUCCEEDED:
            raise TransitionRefused(f"A payment in status {self.status} cannot be refunded.")
        amount = self.refundable if amount is None else amount
        if self.refundable <= 0:
            raise TransitionRefused("The payment has been refunded in full.")
        if not 0 < amount <= self.refundable:
            raise TransitionRefused(
                f"The refund amount must be between 1 and {self.refundable}.", param="amount"
            )
        return replace(self, amount_refund_pending=self.amount_refund_pending + amount), amount

    def refund_settled(self, amount: int, *, succeeded: bool) -> PaymentState:
        """The bank answered a pending refund: it moves from reserved to refunded, or back."""
        if self.status != S.SUCCEEDED or not 0 < amount <= self.amount_refund_pending:
            raise TransitionRefused("No pending refund of that amount.")
        refunded = self.amount_refunded + (amount if succeeded else 0)
        return self._to(
            S.SUCCEEDED,
            amount_refunded=refunded,
            amount_refund_pending=self.amount_refund_pending - amount,
        )


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
