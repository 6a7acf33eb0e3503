"""Settlement rules, pure: the day's cut-off, the totals of the balance transactions a
settlement covers, what it may pay, and amounts in major units for payout files.

A settlement covers, per merchant, mode and currency, the balance transactions available by the
cut-off and not yet settled. It pays their net only when that is positive, the merchant has a
bank account, and the ledger's available balance (re-read under the balance lock) holds it; else
it pays nothing and its transactions wait for the next run: a negative balance is carried
forward, never paid out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paygate import money

PAID = "paid"
CARRIED_FORWARD = "carried_forward"
PAYOUT_BLOCKED = "payout_blocked"  # no bank account to pay to
STATUSES = (PAID, CARRIED_FORWARD, PAYOUT_BLOCKED)


def parse_cutoff(text: str) -> int:
    """Seconds after midnight UTC of a cut-off "HH:MM" ("24:00" is the end of the day)."""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError("the settlement cut-off is HH:MM (UTC), e.g. 24:00 or 18:30")
    seconds = int(hours) * 3600 + int(minutes) * 60
    if int(minutes) >= 60 or not 0 <= seconds <= 86_400:
        raise ValueError("the settlement cut-off is a time of day from 00:00 to 24:00 (UTC)")
    return seconds


def cutoff_of(day: dt.date, cutoff: str, now: int) -> int:
    """The instant a run for `day` settles up to: the day's cut-off, or `now` when that is
    still to come (a run for the current day settles what is available when it runs)."""
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return min(midnight + parse_cutoff(cutoff), now)


@dataclass(frozen=True, slots=True)
class Totals:
    gross: int  # charges captured
    refunds: int  # refunded (a positive amount)
    fees: int  # fees charged less fees returned
    net: int  # gross - refunds - fees

    @classmethod
    def of(cls, txns: Iterable[Mapping[Any, Any]]) -> Totals:
        gross = refunds = fees = net = 0
        for t in txns:
            if t["type"] == "charge":
                gross += t["amount"]
            else:
                refunds -= t["amount"]
            fees += t["fee"]
            net += t["net"]
        return cls(gross, refunds, fees, net)


def decide(net: int, available: int, has_bank_account: bool) -> tuple[str, int]:
    """(status, amount paid). Never more than the available balance, never a non-positive
    amount: what cannot be paid stays for the next run."""
    if net <= 0 or net > available:
        return CARRIED_FORWARD, 0
    if not has_bank_account:
        return PAYOUT_BLOCKED, 0
    return PAID, net


def major_units(amount: int, currency: str) -> str:
    """An amount in minor units as a decimal in major units by the currency's ISO 4217 exponent,
    exactly (1999 USD → "19.99", 500 JPY → "500", 1500 KWD → "1.500"); never through a float."""
    exp = money.exponent(currency)
    if exp is None:
        raise ValueError("not an ISO 4217 currency with a minor unit")
    if amount < 0:
        raise ValueError("payout amounts are never negative")
    whole, frac = divmod(amount, 10**exp)
    return f"{whole}.{frac:0{exp}d}" if exp else str(whole)
