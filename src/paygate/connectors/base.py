"""The bank connector interface: what the payment processor asks of a bank, and what it learns.

Outcomes, from the caller's side:

    Outcome
    ├── APPROVED      applied and approved
    ├── DECLINED      applied (or refused) with a `failure_code`; final, do not retry
    ├── UNKNOWN       maybe applied: a timeout or a dropped connection after the request left,
    │                 or a 5xx other than 503. Resolve with `lookup(reference)`, never by
    │                 sending a new operation.
    ├── UNAVAILABLE   not applied: the request never reached the bank, the bank said 503, or
    │                 the circuit breaker is open. Safe to try again later, same reference.
    └── NOT_FOUND     only from `lookup`: the bank never applied this reference.

Provider errors (HTTP statuses, transport exceptions, the bank's own codes) are translated here
and never leave a connector. Card data never reaches a `repr`, a log line or an exception text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

Operation = Literal["authorize", "sale", "capture", "void", "refund"]


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"

    @property
    def final(self) -> bool:
        """Whether the bank's answer is known (approved or declined)."""
        return self in (Outcome.APPROVED, Outcome.DECLINED)


# The issuer's reasons, which become the payment's `failure_code` (DESIGN.md section 4).
CARD_FAILURE_CODES: frozenset[str] = frozenset(
    {
        "card_declined",
        "insufficient_funds",
        "expired_card",
        "incorrect_cvc",
        "processing_error",
        "lost_card",
        "stolen_card",
    }
)
# The bank refusing a request its records contradict; the processor decides what they mean for
# the payment (e.g. a capture refused for good voids and fails it with `processing_error`).
REFUSAL_CODES: frozenset[str] = frozenset(
    {
        "unknown_authorization",
        "amount_exceeds_authorized",
        "already_captured",
        "already_voided",
        "unknown_payment",
        "amount_exceeds_captured",
        "currency_mismatch",
        # The bank rejected the request as malformed: a gateway bug, nothing was applied.
        "invalid_request",
    }
)


def failure_code(bank_code: object) -> str:
    """The gateway's code for a bank decline code; anything unexpected is a processing error."""
    if isinstance(bank_code, str) and (
        bank_code in CARD_FAILURE_CODES or bank_code in REFUSAL_CODES
    ):
        return bank_code
    return "processing_error"


def mask_number(number: str) -> str:
    """`•••• 4242`: the last four digits at most, and none of a number too short to hide them."""
    return f"•••• {number[-4:]}" if len(number) >= 12 else "••••"


@dataclass(frozen=True, slots=True, repr=False)
class Card:
    """Card data for one authorization or sale. Its `repr` and `str` mask the number and hide the
    CVC, so that a card passed to a log or an exception shows neither."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str | None = None

    def __repr__(self) -> str:
        cvc = ", cvc=•••" if self.cvc else ""
        return (
            f"Card(number={mask_number(self.number)!r}, exp_month={self.exp_month}, "
            f"exp_year={self.exp_year}{cvc})"
        )

    __str__ = __repr__

    def as_json(self) -> dict[str, Any]:
        """The wire form; only for the request body."""
        body: dict[str, Any] = {
            "number": self.number,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
        }
        if self.cvc is not None:
            body["cvc"] = self.cvc
        return body


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """An authorization or a sale. `reference` is `<payment id>:authorize` or `…:sale`."""

    reference: str
    amount: int
    currency: str
    card: Card


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """Capture all or part of the authorization with reference `authorization`."""

    reference: str
    authorization: str
    amount: int


@dataclass(frozen=True, slots=True)
class VoidRequest:
    reference: str
    authorization: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Refund part or all of the sale or capture with reference `payment_reference`;
    `reference` is `<payment id>:refund:<refund id>`."""

    reference: str
    payment_reference: str
    amount: int


@dataclass(frozen=True, slots=True)
class BankResult:
    """What became of one bank operation. `operation` is one of `Operation`; for a `lookup` that
    found nothing it is read from the reference (`<payment id>:<operation>…`).

    `failure_code` is set for DECLINED only. `amount` and `currency` are the bank's when it
    answered, else the request's (currency may be unknown for capture, void and refund).
    `detail` is a short diagnostic for logs (never request data); `raw` the bank's answer body.
    """

    reference: str
    operation: str
    outcome: Outcome
    failure_code: str | None = None
    amount: int | None = None
    currency: str | None = None
    bank_id: str | None = None
    detail: str | None = None
    raw: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def approved(self) -> bool:
        return self.outcome is Outcome.APPROVED

    @property
    def applied(self) -> bool | None:
        """True when the bank applied the operation (approved or declined), False when it
        certainly did not, None when nobody knows yet."""
        if self.outcome.final:
            return True
        if self.outcome is Outcome.UNKNOWN:
            return None
        return False


class BankConnector(Protocol):
    """A bank reached by stable references: every call is idempotent by its reference, so a
    repeat of the same request is safe and returns the first answer."""

    async def authorize(self, request: PaymentRequest) -> BankResult: ...

    async def sale(self, request: PaymentRequest) -> BankResult: ...

    async def capture(self, request: CaptureRequest) -> BankResult: ...

    async def void(self, request: VoidRequest) -> BankResult: ...

    async def refund(self, request: RefundRequest) -> BankResult: ...

    async def lookup(self, reference: str) -> BankResult:
        """The bank's answer under `reference`: APPROVED or DECLINED as first given, NOT_FOUND if
        it never applied it, UNKNOWN or UNAVAILABLE if it cannot be asked right now."""
        ...

    async def aclose(self) -> None: ...
