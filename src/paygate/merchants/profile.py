"""A merchant's payout terms, pure: its bank account (IBAN and BIC checked with `schwifty`:
ISO 13616 checksum and each country's format, ISO 9362 for the BIC) and its pricing.

Error messages never quote the value: an IBAN is personal data, and a mistyped field may hold
anything, a card number included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schwifty import BIC, IBAN
from schwifty import exceptions as iban_errors

from paygate import money
from paygate.errors import InvalidRequest
from paygate.ledger.models import Pricing

MAX_PAYOUT_DELAY_DAYS = 30

_IBAN_PROBLEMS: list[tuple[type[Exception], str, str]] = [
    (
        iban_errors.InvalidCountryCode,
        "invalid_iban_country",
        "the country code is not an IBAN country",
    ),
    (iban_errors.InvalidLength, "invalid_iban_length", "the length is wrong for its country"),
    (iban_errors.InvalidStructure, "invalid_iban_format", "the format is wrong for its country"),
    (iban_errors.InvalidChecksumDigits, "invalid_iban_checksum", "the check digits do not match"),
]


@dataclass(frozen=True, slots=True)
class BankAccount:
    iban: str  # compact, upper case
    bic: str | None
    account_holder: str

    @property
    def country(self) -> str:
        return self.iban[:2]

    @property
    def last4(self) -> str:
        return self.iban[-4:]


def bank_account(iban: str, bic: str | None, account_holder: str) -> BankAccount:
    """A checked bank account, or InvalidRequest naming the field (`bank_account[iban]`)."""
    try:
        parsed = IBAN(iban)
    except iban_errors.SchwiftyException as exc:
        code, why = next(
            ((c, w) for kind, c, w in _IBAN_PROBLEMS if isinstance(exc, kind)),
            ("invalid_iban", "it is not a valid IBAN"),
        )
        raise InvalidRequest(
            f"Invalid bank_account[iban]: {why}.", param="bank_account[iban]", code=code
        ) from None
    checked_bic = None
    if bic is not None:
        try:
            checked_bic = str(BIC(bic).compact)
        except iban_errors.SchwiftyException:
            raise InvalidRequest(
                "Invalid bank_account[bic]: it is not a valid BIC (ISO 9362).",
                param="bank_account[bic]",
                code="invalid_bic",
            ) from None
    holder = account_holder.strip()
    if not holder:
        raise InvalidRequest(
            "Invalid bank_account[account_holder]: it must not be empty.",
            param="bank_account[account_holder]",
        )
    return BankAccount(iban=str(parsed.compact), bic=checked_bic, account_holder=holder)


def pricing(given: dict[str, Any], current: Pricing) -> Pricing:
    """`current` with the fields of `given` (percent_bps, fixed, refund_fees) over it."""
    percent = given.get("percent_bps", current.percent_bps)
    if not 0 <= percent <= 10_000:
        raise InvalidRequest(
            "Invalid pricing[percent_bps]: basis points from 0 to 10000.",
            param="pricing[percent_bps]",
        )
    fixed = given.get("fixed")
    if fixed is None:
        fixed = dict(current.fixed)
    else:
        fixed = {code.lower(): amount for code, amount in fixed.items()}
        for code, amount in fixed.items():
            if not money.is_currency(code):
                raise InvalidRequest(
                    "Invalid pricing[fixed]: keys must be ISO 4217 currency codes.",
                    param="pricing[fixed]",
                    code="invalid_currency",
                )
            if not 0 <= amount <= money.MAX_AMOUNT:
                raise InvalidRequest(
                    "Invalid pricing[fixed]: amounts are non-negative integers in the "
                    "currency's minor unit.",
                    param=f"pricing[fixed][{code}]",
                )
    refund_fees = given.get("refund_fees", current.refund_fees)
    return Pricing(percent_bps=percent, fixed=fixed, refund_fees=refund_fees)


def pricing_to_json(p: Pricing) -> dict[str, Any]:
    return {"percent_bps": p.percent_bps, "fixed": dict(p.fixed), "refund_fees": p.refund_fees}


def pricing_from_json(data: dict[str, Any] | None) -> Pricing:
    if data is None:
        return Pricing()
    return Pricing(
        percent_bps=int(data["percent_bps"]),
        fixed={str(k): int(v) for k, v in data["fixed"].items()},
        refund_fees=bool(data["refund_fees"]),
    )


def payout_delay_days(days: int) -> int:
    if not 0 <= days <= MAX_PAYOUT_DELAY_DAYS:
        raise InvalidRequest(
            f"Invalid payout_delay_days: from 0 to {MAX_PAYOUT_DELAY_DAYS} days.",
            param="payout_delay_days",
        )
    return days
