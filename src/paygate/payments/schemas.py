"""Payment request and response shapes (DESIGN.md section 4, Objects)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from paygate.api.schemas import Amount, Currency, Metadata, Strict
from paygate.vault import cards


def _number(value: str) -> str:
    digits = cards.normalize_number(value)
    if digits is None or not cards.luhn_valid(digits):
        raise PydanticCustomError("invalid_number", "the card number is not a valid card number")
    return digits


def _cvc(value: str) -> str:
    if not (value.isascii() and value.isdigit() and 3 <= len(value) <= 4):
        raise PydanticCustomError("invalid_cvc", "the security code must be 3 or 4 digits")
    return value


class CardIn(Strict):
    number: Annotated[StrictStr, Field(max_length=40), AfterValidator(_number)] = Field(
        examples=["4242424242424242"]
    )
    exp_month: Annotated[StrictInt, Field(ge=1, le=12)] = Field(examples=[12])
    exp_year: Annotated[StrictInt, Field(ge=2000, le=2100)] = Field(examples=[2030])
    cvc: Annotated[StrictStr, Field(max_length=8), AfterValidator(_cvc)] = Field(examples=["123"])

    @model_validator(mode="after")
    def _not_expired(self) -> CardIn:
        # Checked before execution starts, so a corrected retry with the same key runs.
        if cards.expired(self.exp_month, self.exp_year):
            raise PydanticCustomError("invalid_expiry", "the card's expiry date is in the past")
        return self

    def __repr__(self) -> str:  # never the number or the CVC
        return f"CardIn(last4={self.number[-4:]}, exp={self.exp_month}/{self.exp_year})"

    __str__ = __repr__


class PaymentMethodIn(Strict):
    """Exactly one of `card` (card details) or `token` (a `tok_…` made by `POST /v1/tokens`, so
    that the merchant's server never handles the card number)."""

    # Validated before `card`, whose check needs to know whether a token came.
    token: Annotated[StrictStr, Field(max_length=40, pattern=r"^tok_[0-9A-Za-z]+$")] | None = Field(
        None, examples=["tok_01JD4Q6Z8V3N2M5K7H9G1F0E2D"]
    )
    card: CardIn | None = Field(None, validate_default=True)

    @field_validator("card", mode="after")
    @classmethod
    def _card_or_token(cls, card: CardIn | None, info: ValidationInfo) -> CardIn | None:
        token = info.data.get("token")
        if card is None and token is None and "token" in info.data:
            raise PydanticCustomError("missing", "Field required")
        if card is not None and token is not None:
            raise PydanticCustomError(
                "parameter_invalid", "give either a card or a token, not both"
            )
        return card


class CustomerIn(Strict):
    id: Annotated[StrictStr, Field(max_length=40)] | None = None
    email: (
        Annotated[StrictStr, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None
    ) = None
    name: Annotated[StrictStr, Field(max_length=200)] | None = None


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))  # canonical: one form per address
    except ValueError:
        raise PydanticCustomError("invalid_ip_address", "must be an IPv4 or IPv6 address") from None


class PaymentCreate(Strict):
    amount: Amount
    currency: Currency
    payment_method: PaymentMethodIn
    capture: StrictBool = True
    customer: CustomerIn | None = None
    description: Annotated[StrictStr, Field(max_length=1000)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    # The paying customer's IP address, as the merchant's server saw it: for fraud rules
    # (`ip_address`, `ip_country`, velocity per IP). Kept with the payment, not in its object.
    ip_address: Annotated[StrictStr, Field(max_length=45), AfterValidator(_ip_address)] | None = (
        Field(None, examples=["203.0.113.7"])
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "amount": 1999,
                    "currency": "usd",
                    "payment_method": {
                        "card": {
                            "number": "4242424242424242",
                            "exp_month": 12,
                            "exp_year": 2030,
                            "cvc": "123",
                        }
                    },
                    "capture": True,
                    "customer": {"email": "jenny@example.com", "name": "Jenny Rosen"},
                    "description": "Order #1042",
                    "metadata": {"order_id": "1042"},
                }
            ]
        }
    }


class CaptureIn(Strict):
    amount: Amount | None = None


class CancelIn(Strict):
    cancellation_reason: (
        Literal["duplicate", "fraudulent", "requested_by_customer", "abandoned"] | None
    ) = None


class CardOut(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str


class PaymentMethodOut(BaseModel):
    type: Literal["card"] = "card"
    card: CardOut


class RiskOut(BaseModel):
    score: int
    level: str
    decision: str
    reasons: list[str]


class PaymentOut(BaseModel):
    id: str = Field(examples=["pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["payment"] = "payment"
    livemode: bool
    amount: int
    amount_capturable: int
    amount_captured: int
    amount_refunded: int
    currency: str
    status: str = Field(examples=["pending"])
    capture: bool
    failure_code: str | None
    failure_message: str | None
    payment_method: PaymentMethodOut
    customer: str | None
    description: str | None
    metadata: dict[str, str]
    risk: RiskOut | None
    created: int
    updated: int


class TransactionLogEntryOut(BaseModel):
    id: str
    object: Literal["transaction_log_entry"] = "transaction_log_entry"
    type: str
    status: str
    amount: int
    created: int
    details: dict[str, Any]


def render(p: Mapping[Any, Any]) -> dict[str, Any]:
    """The public payment object from a `payments` row (or a dict of its columns)."""
    return {
        "id": p["id"],
        "object": "payment",
        "livemode": p["livemode"],
        "amount": p["amount"],
        "amount_capturable": p["amount_capturable"],
        "amount_captured": p["amount_captured"],
        "amount_refunded": p["amount_refunded"],
        "currency": p["currency"],
        "status": p["status"],
        "capture": p["capture"],
        "failure_code": p["failure_code"],
        "failure_message": p["failure_message"],
        "payment_method": p["payment_method"],
        "customer": p["customer_id"],
        "description": p["description"],
        "metadata": p["metadata"],
        "risk": p["risk"],
        "created": p["created"],
        "updated": p["updated"],
    }
