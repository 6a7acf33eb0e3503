"""The bank's card rules, pure: Luhn, brand, expiry, the test-card table, fingerprints.

The test numbers are the ones the major processors publish (DESIGN.md section 4). The fraud
screening numbers (4100000000000019, 4000000000009235) are ordinary approved cards here: fraud is
the gateway's job, not the bank's. Nothing in this module formats a card number into text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from paygate.banksim.models import DeclineCode
from paygate.vault.cards import brand, luhn_valid

TEST_CARDS: dict[str, DeclineCode | None] = {
    "4242424242424242": None,
    "5555555555554444": None,
    "4000000000000002": DeclineCode.CARD_DECLINED,
    "4000000000009995": DeclineCode.INSUFFICIENT_FUNDS,
    "4000000000000069": DeclineCode.EXPIRED_CARD,
    "4000000000000127": DeclineCode.INCORRECT_CVC,
    "4000000000000119": DeclineCode.PROCESSING_ERROR,
    "4000000000009987": DeclineCode.LOST_CARD,
    "4000000000009979": DeclineCode.STOLEN_CARD,
}


@dataclass(frozen=True, slots=True)
class CardSummary:
    """What the bank keeps of a card: never the number or the CVC."""

    brand: str
    last4: str
    fingerprint: str


def expired(exp_month: int, exp_year: int, today: dt.date) -> bool:
    """A card is valid through the last day of its expiry month. Two-digit years mean 20xx."""
    year = exp_year + 2000 if exp_year < 100 else exp_year
    return (year, exp_month) < (today.year, today.month)


def decline_code(number: str, exp_month: int, exp_year: int, today: dt.date) -> DeclineCode | None:
    """The issuer's answer for a card: None to approve, else why it is declined.

    `number` must already be digits only. A number failing the Luhn check is declined as
    `card_declined`, as issuers do for numbers they cannot find.
    """
    if not luhn_valid(number):
        return DeclineCode.CARD_DECLINED
    if expired(exp_month, exp_year, today):
        return DeclineCode.EXPIRED_CARD
    return TEST_CARDS.get(number)


def summarize(number: str, fingerprint_key: bytes) -> CardSummary:
    """Brand, last four digits and a keyed fingerprint (HMAC-SHA256), the most the bank keeps."""
    mac = hmac.new(fingerprint_key, number.encode(), hashlib.sha256).hexdigest()
    return CardSummary(brand=brand(number), last4=number[-4:], fingerprint=mac[:32])
