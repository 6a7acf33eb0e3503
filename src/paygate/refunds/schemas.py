"""Refund request and response shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictStr

from paygate.api.schemas import Amount, Metadata, Strict


class RefundCreate(Strict):
    payment: Annotated[StrictStr, Field(max_length=40)] = Field(
        examples=["pay_01JD4Q6Z8V3N2M5K7H9G1F0E2D"]
    )
    amount: Amount | None = Field(default=None, description="Defaults to all that is refundable.")
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None
    metadata: Metadata = Field(default_factory=dict)


class RefundOut(BaseModel):
    id: str = Field(examples=["re_01JD4Q7A1B2C3D4E5F6G7H8J9K"])
    object: Literal["refund"] = "refund"
    livemode: bool
    payment: str
    amount: int
    currency: str
    status: str = Field(examples=["pending"])
    reason: str | None
    failure_code: str | None
    metadata: dict[str, str]
    created: int


def render(r: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "object": "refund",
        "livemode": r["livemode"],
        "payment": r["payment_id"],
        "amount": r["amount"],
        "currency": r["currency"],
        "status": r["status"],
        "reason": r["reason"],
        "failure_code": r["failure_code"],
        "metadata": r["metadata"],
        "created": r["created"],
    }
