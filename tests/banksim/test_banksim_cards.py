"""The test-card table and card rules, pure and through the API."""

from __future__ import annotations

import datetime as dt

import pytest

from paygate.banksim.cards import brand, decline_code, expired, luhn_valid, summarize
from paygate.banksim.models import DeclineCode

TODAY = dt.date(2026, 6, 15)

CARD_ANSWERS = [
    ("4242424242424242", None),
    ("5555555555554444", None),
    ("4000000000000002", "card_declined"),
    ("4000000000009995", "insufficient_funds"),
    ("4000000000000069", "expired_card"),
    ("4000000000000127", "incorrect_cvc"),
    ("4000000000000119", "processing_error"),
    ("4000000000009987", "lost_card"),
    ("4000000000009979", "stolen_card"),
    # Fraud screening cards are the gateway's business: the bank approves them.
    ("4100000000000019", None),
    ("4000000000009235", None),
    # Any other Luhn-valid number is approved.
    ("378282246310005", None),
    ("6011111111111117", None),
    # Luhn-invalid numbers are declined.
    ("4242424242424241", "card_declined"),
]


@pytest.mark.parametrize(("number", "code"), CARD_ANSWERS)
def test_decline_code_table(number: str, code: str | None) -> None:
    assert decline_code(number, 12, 2030, TODAY) == code


@pytest.mark.parametrize(
    ("month", "year", "is_expired"),
    [(6, 2026, False), (5, 2026, True), (12, 2025, True), (1, 2027, False), (6, 26, False)],
)
def test_valid_through_the_end_of_the_expiry_month(month: int, year: int, is_expired: bool) -> None:
    assert expired(month, year, TODAY) is is_expired


def test_past_expiry_declines_even_a_good_card() -> None:
    assert decline_code("4242424242424242", 5, 2026, TODAY) is DeclineCode.EXPIRED_CARD


def test_luhn_and_brands() -> None:
    assert luhn_valid("4242424242424242") and not luhn_valid("4242424242424243")
    assert brand("4242424242424242") == "visa"
    assert brand("5555555555554444") == "mastercard"
    assert brand("2223003122003222") == "mastercard"
    assert brand("378282246310005") == "amex"
    assert brand("6011111111111117") == "discover"
    assert brand("3566002020360505") == "jcb"
    assert brand("9999999999999995") == "unknown"


def test_summary_keeps_no_number() -> None:
    summary = summarize("4242424242424242", b"key")
    assert summary.last4 == "4242" and summary.brand == "visa"
    assert "4242424242424242" not in repr(summary)
    assert summarize("4242424242424242", b"other").fingerprint != summary.fingerprint


@pytest.mark.parametrize(("number", "code"), CARD_ANSWERS)
async def test_every_test_card_through_the_api(ops, number: str, code: str | None) -> None:
    for operation in ("authorize", "sale"):
        answer = await ops.pay("pay_card", 1999, operation=operation, number=number)
        assert answer["status"] == ("approved" if code is None else "declined")
        assert answer["decline_code"] == code
        assert answer["reference"] == f"pay_card:{operation}"
        assert answer["operation"] == operation
        assert (answer["amount"], answer["currency"]) == (1999, "usd")
        assert answer["card"]["last4"] == number[-4:]
        assert number not in str(answer)


async def test_expired_card_through_the_api(ops) -> None:
    answer = await ops.pay("pay_old", exp_year=2020)
    assert (answer["status"], answer["decline_code"]) == ("declined", "expired_card")
