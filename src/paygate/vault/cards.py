"""Card number rules, pure: Luhn, brand, expiry. Nothing here ever formats a card number into a
message."""

from __future__ import annotations

import datetime as dt
import re

# A run of 13 to 19 digits, optionally grouped by single spaces or dashes, as people type cards.
_CARD_LIKE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def normalize_number(number: str) -> str | None:
    """Digits only (spaces and dashes between groups allowed), 12 to 19 long, else None."""
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        return None
    return digits


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def brand(digits: str) -> str:
    """The card network, from the IIN ranges the networks publish."""
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if digits.startswith("6011") or digits.startswith("65") or 644 <= int(digits[:3]) <= 649:
        return "discover"
    if 3528 <= four <= 3589:
        return "jcb"
    if two == 36 or 300 <= int(digits[:3]) <= 305 or two == 38:
        return "diners"
    if two == 62:
        return "unionpay"
    return "unknown"


def expired(exp_month: int, exp_year: int, today: dt.date | None = None) -> bool:
    """A card is valid through the last day of its expiry month."""
    today = today or dt.datetime.now(dt.UTC).date()
    return (exp_year, exp_month) < (today.year, today.month)


def contains_card_number(text: str) -> bool:
    """Whether free text holds what is almost surely a card number: a Luhn-valid run of 13 to 19
    digits in a card network's range (so most order and phone numbers pass)."""
    for match in _CARD_LIKE.finditer(text):
        digits = match.group(0).replace(" ", "").replace("-", "")
        if luhn_valid(digits) and brand(digits) != "unknown":
            return True
    return False
