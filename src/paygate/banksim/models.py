"""The bank's records: one row per operation it answered, approved or declined.

A declined operation is recorded too: it is part of the answer the bank gave under a reference,
and a replay of that reference must get the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

OperationKind = Literal["authorize", "sale", "capture", "void", "refund"]
Status = Literal["approved", "declined"]

# Operations that move money, the lines of the settlement report.
MONEY_MOVING: frozenset[str] = frozenset({"sale", "capture", "refund"})


class DeclineCode(StrEnum):
    """Why the bank said no. The card codes come from the issuer; the others are the bank
    refusing a request that its own records contradict."""

    CARD_DECLINED = "card_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    EXPIRED_CARD = "expired_card"
    INCORRECT_CVC = "incorrect_cvc"
    PROCESSING_ERROR = "processing_error"
    LOST_CARD = "lost_card"
    STOLEN_CARD = "stolen_card"
    # Capture and void.
    UNKNOWN_AUTHORIZATION = "unknown_authorization"
    AMOUNT_EXCEEDS_AUTHORIZED = "amount_exceeds_authorized"
    ALREADY_CAPTURED = "already_captured"
    ALREADY_VOIDED = "already_voided"
    # Refund.
    UNKNOWN_PAYMENT = "unknown_payment"
    AMOUNT_EXCEEDS_CAPTURED = "amount_exceeds_captured"
    # Capture and refund, when the request names a currency other than the original's.
    CURRENCY_MISMATCH = "currency_mismatch"


@dataclass(frozen=True, slots=True)
class Operation:
    """One answered operation. `parent` is the authorization (capture, void) or the sale or
    capture (refund) that it refers to."""

    id: str
    reference: str
    payment: str
    operation: OperationKind
    parent: str | None
    amount: int
    currency: str | None
    status: Status
    decline_code: str | None
    card_brand: str | None
    card_last4: str | None
    card_fingerprint: str | None
    request_hash: str
    created_ms: int

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def created(self) -> int:
        """Unix seconds, as every time in the gateway's contract."""
        return self.created_ms // 1000

    def answer(self) -> dict[str, Any]:
        """The body of the bank's answer; a replay rebuilds it from the row, unchanged."""
        body: dict[str, Any] = {
            "id": self.id,
            "reference": self.reference,
            "operation": self.operation,
            "status": self.status,
            "decline_code": self.decline_code,
            "amount": self.amount,
            "currency": self.currency,
            "created": self.created,
            "payment": self.payment,
        }
        if self.operation in ("capture", "void"):
            body["authorization"] = self.parent
        elif self.operation == "refund":
            body["payment_reference"] = self.parent
        if self.card_last4 is not None:
            body["card"] = {"brand": self.card_brand, "last4": self.card_last4}
        return body

    def audit_line(self) -> dict[str, Any]:
        """An entry of the audit listing (`GET /v1/operations?payment=`)."""
        return {
            "reference": self.reference,
            "operation": self.operation,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "decline_code": self.decline_code,
            "created": self.created,
        }


def payment_of(reference: str) -> str:
    """The payment id of a reference: the part before the first colon (the contract's
    `<payment id>:<operation>[:<refund id>]`)."""
    return reference.split(":", 1)[0]
