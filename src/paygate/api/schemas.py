"""Shared request building blocks: strict models (no coercion, no unknown fields), metadata,
amounts, currencies, and the list envelope."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from paygate import money
from paygate.vault.cards import contains_card_number

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500


class Strict(BaseModel):
    """Request bodies: JSON types exactly (no "12" for 12, no true for 1), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=5000)

    # Fields that carry card data by design, and so are exempt from the card-number check.
    _card_fields: ClassVar[frozenset[str]] = frozenset({"number"})

    @field_validator("*", mode="after")
    @classmethod
    def _safe_text(cls, value: Any, info: ValidationInfo) -> Any:
        # PostgreSQL text cannot hold U+0000 (SQLite can): refused here, with the field named,
        # so that both backends answer the same 400 instead of one of them failing on insert.
        if _has_nul(value):
            raise PydanticCustomError("invalid_string", "must not contain NUL characters")
        # Card numbers live only in the vault: one typed into a description or metadata would
        # be stored and returned in plain text (PCI DSS 3.4), so it is refused.
        if info.field_name not in cls._card_fields and _has_card_number(value):
            raise PydanticCustomError(
                "card_number_in_text",
                "must not contain a card number; send card data only in payment_method.card",
            )
        return value


def _has_card_number(value: Any) -> bool:
    if isinstance(value, str):
        return contains_card_number(value)
    if isinstance(value, dict):
        return any(_has_card_number(k) or _has_card_number(v) for k, v in value.items())
    return False


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _amount(value: int) -> int:
    if not 0 < value <= money.MAX_AMOUNT:
        raise PydanticCustomError(
            "invalid_amount",
            "must be a positive integer in the currency's minor unit, at most {max}",
            {"max": money.MAX_AMOUNT},
        )
    return value


def _currency(value: str) -> str:
    code = value.lower()
    if not money.is_currency(code):
        raise PydanticCustomError("invalid_currency", "must be an ISO 4217 currency code")
    return code


def _metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise PydanticCustomError("invalid_metadata", "at most 50 keys")
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise PydanticCustomError("invalid_metadata", "keys are 1 to 40 characters")
        if len(item) > MAX_METADATA_VALUE:
            raise PydanticCustomError("invalid_metadata", "values are at most 500 characters")
    return value


Amount = Annotated[StrictInt, AfterValidator(_amount), Field(examples=[1999])]
Currency = Annotated[str, AfterValidator(_currency), Field(examples=["usd"])]
Metadata = Annotated[dict[str, str], AfterValidator(_metadata)]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class ListOut(BaseModel):
    object: str = "list"
    data: list[Any]
    has_more: bool


def page(rows: list[dict[str, Any]], limit: int, *, backwards: bool = False) -> dict[str, Any]:
    """The list envelope from `limit + 1` fetched rows (oldest extra row first when paging
    backwards)."""
    more = len(rows) > limit
    data = rows[-limit:] if backwards and more else rows[:limit]
    return {"object": "list", "data": data, "has_more": more}
