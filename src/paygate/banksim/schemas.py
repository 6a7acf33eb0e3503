"""Request bodies of the bank's API. Strict: a string is not a number, a float is not an amount.

The card number and CVC are excluded from `repr`, so a model printed by accident shows neither.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from paygate.money import MAX_AMOUNT, is_currency

# References are opaque to the bank beyond the payment id before the first colon; printable
# ASCII without spaces keeps them safe in URLs, logs and the CSV report.
Reference = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def _currency(value: str | None) -> str | None:
    if value is not None and not is_currency(value):
        raise ValueError("must be a lowercase ISO 4217 currency code")
    return value


class CardIn(_Body):
    number: str = Field(min_length=12, max_length=19, pattern=r"^[0-9]+$", repr=False)
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=0, le=9999)
    cvc: str | None = Field(default=None, pattern=r"^[0-9]{3,4}$", repr=False)


class PaymentIn(_Body):
    """`/v1/authorize` and `/v1/sale`."""

    reference: Reference
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: str
    card: CardIn

    _check_currency = field_validator("currency")(_currency)


class CaptureIn(_Body):
    """`/v1/capture`: full or partial, once per authorization."""

    reference: Reference
    authorization: Reference
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: str | None = None

    _check_currency = field_validator("currency")(_currency)


class VoidIn(_Body):
    """`/v1/void`: releases an uncaptured authorization."""

    reference: Reference
    authorization: Reference


class RefundIn(_Body):
    """`/v1/refund`: partial and repeated refunds allowed up to the captured amount."""

    reference: Reference
    payment_reference: Reference
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: str | None = None

    _check_currency = field_validator("currency")(_currency)
