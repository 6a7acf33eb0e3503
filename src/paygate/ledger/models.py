"""Ledger rules, pure: accounts, fees, and the journal entries each money event makes.

Signs: a posting's amount is positive for a debit and negative for a credit, so every entry
sums to zero per currency. What the gateway owes a merchant (pending, available, reserved) and
its fee revenue are credit balances; money at the bank (clearing) is a debit balance. Amounts
are integers in the currency's minor unit (ISO 4217), never floats.

Fees: `percent_bps` basis points of the amount, rounded half up to the minor unit, plus a fixed
amount stated per currency (30 in USD is 30 cents; a currency without a fixed amount gets none:
a fixed 30 never means 30 yen by accident). A refund returns the fee in proportion to what has
been refunded so far, by cumulative rounding: the fee returned by all refunds up to R is
round_half_up(fee * R / captured), and each refund returns that minus what earlier ones did, so
the parts add up exactly to the whole fee after a full refund.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True, slots=True)
class Pricing:
    percent_bps: int = 290
    fixed: dict[str, int] = field(default_factory=lambda: {"usd": 30, "eur": 25, "gbp": 20})
    refund_fees: bool = True

    def fee(self, amount: int, currency: str) -> int:
        percent = _half_up(Decimal(amount) * self.percent_bps / 10_000)
        return min(amount, percent + self.fixed.get(currency, 0))


def _half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fee_returned(fee: int, captured: int, refunded_before: int, refund: int) -> int:
    """The part of `fee` a refund of `refund` returns, after `refunded_before` was refunded."""
    if captured <= 0:
        return 0

    def upto(refunded: int) -> int:
        return _half_up(Decimal(fee) * refunded / captured)

    return upto(refunded_before + refund) - upto(refunded_before)


# Account names: <owner>:<mode>:<currency>:<kind>. The owner is a merchant id or "platform"; the
# mode (`live` or `test`) keeps test money out of live balances, payouts and fee revenue.
MERCHANT_KINDS = ("pending", "available", "reserved", "paid_out")


def mode(livemode: bool) -> str:
    return "live" if livemode else "test"


def merchant_account(merchant_id: str, currency: str, kind: str, *, livemode: bool) -> str:
    assert kind in MERCHANT_KINDS
    return f"{merchant_id}:{mode(livemode)}:{currency}:{kind}"


def platform_account(currency: str, kind: str, *, livemode: bool) -> str:
    assert kind in ("fees", "bank_clearing")
    return f"platform:{mode(livemode)}:{currency}:{kind}"


def account_mode(account: str) -> str:
    """`live` or `test`: the mode segment of an account name."""
    return account.split(":")[1]


Postings = list[tuple[str, int]]  # (account, signed amount)


def balanced(postings: Postings) -> bool:
    return sum(amount for _, amount in postings) == 0


def capture(merchant_id: str, currency: str, amount: int, fee: int, *, livemode: bool) -> Postings:
    """A capture (or sale): the bank owes us the amount; we owe the merchant the amount less
    the fee, pending until the payout delay passes; the fee is revenue."""
    return [
        (platform_account(currency, "bank_clearing", livemode=livemode), amount),
        (merchant_account(merchant_id, currency, "pending", livemode=livemode), -(amount - fee)),
        (platform_account(currency, "fees", livemode=livemode), -fee),
    ]


def release(merchant_id: str, currency: str, amount: int, *, livemode: bool) -> Postings:
    """Funds past their payout delay move from pending to available."""
    return [
        (merchant_account(merchant_id, currency, "pending", livemode=livemode), amount),
        (merchant_account(merchant_id, currency, "available", livemode=livemode), -amount),
    ]


def reserve_refund(merchant_id: str, currency: str, amount: int, *, livemode: bool) -> Postings:
    """A pending refund holds its amount out of the merchant's available balance."""
    return [
        (merchant_account(merchant_id, currency, "available", livemode=livemode), amount),
        (merchant_account(merchant_id, currency, "reserved", livemode=livemode), -amount),
    ]


def refund_succeeded(
    merchant_id: str, currency: str, amount: int, fee_back: int, *, livemode: bool
) -> Postings:
    """The bank returned the money to the card; the merchant gets back the fee part."""
    return [
        (merchant_account(merchant_id, currency, "reserved", livemode=livemode), amount),
        (platform_account(currency, "bank_clearing", livemode=livemode), -amount),
        (platform_account(currency, "fees", livemode=livemode), fee_back),
        (merchant_account(merchant_id, currency, "available", livemode=livemode), -fee_back),
    ]


def refund_failed(merchant_id: str, currency: str, amount: int, *, livemode: bool) -> Postings:
    """The bank refused the refund: the reservation goes back to available."""
    return [
        (merchant_account(merchant_id, currency, "reserved", livemode=livemode), amount),
        (merchant_account(merchant_id, currency, "available", livemode=livemode), -amount),
    ]


def payout(merchant_id: str, currency: str, amount: int, *, livemode: bool) -> Postings:
    """A settlement pays `amount` of the available balance out to the merchant's bank."""
    return [
        (merchant_account(merchant_id, currency, "available", livemode=livemode), amount),
        (merchant_account(merchant_id, currency, "paid_out", livemode=livemode), -amount),
    ]
