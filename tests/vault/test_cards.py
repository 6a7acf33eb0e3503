"""Card number rules: normalization, Luhn, brand by IIN range, expiry."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.vault.cards import brand, expired, luhn_valid, normalize_number

# Every test card of DESIGN.md section 4.
DESIGN_TEST_CARDS = [
    "4242424242424242",
    "5555555555554444",
    "4000000000000002",
    "4000000000009995",
    "4000000000000069",
    "4000000000000127",
    "4000000000000119",
    "4000000000009987",
    "4000000000009979",
    "4100000000000019",
    "4000000000009235",
]

# The networks' published test numbers, one or more per brand.
BRANDED = [
    ("4242424242424242", "visa"),
    ("4000056655665556", "visa"),
    ("4222222222222", "visa"),  # 13 digits, still issued
    ("5555555555554444", "mastercard"),
    ("5105105105105100", "mastercard"),
    ("2223003122003222", "mastercard"),  # 2-series, 2221-2720
    ("2221000000000009", "mastercard"),
    ("2720990000000007", "mastercard"),
    ("378282246310005", "amex"),
    ("371449635398431", "amex"),
    ("6011111111111117", "discover"),
    ("6011000990139424", "discover"),
    ("6445644564456445", "discover"),
    ("6500000000000002", "discover"),
    ("3566002020360505", "jcb"),
    ("3530111333300000", "jcb"),
    ("3056930009020004", "diners"),
    ("36227206271667", "diners"),
    ("38520000023237", "diners"),
    ("6200000000000005", "unionpay"),
    ("6250941006528599", "unionpay"),
]


def check_digit(body: str) -> str:
    """The Luhn check digit for `body`, computed here independently of the code under test:
    double every second digit from the right of the full number, i.e. from the right of `body`
    starting with its last digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


valid_numbers = st.text(alphabet="0123456789", min_size=11, max_size=18).map(
    lambda b: b + check_digit(b)
)


@pytest.mark.parametrize("number", DESIGN_TEST_CARDS)
def test_every_design_test_card_is_luhn_valid(number: str) -> None:
    assert normalize_number(number) == number
    assert luhn_valid(number)


@pytest.mark.parametrize(("number", "expected"), BRANDED)
def test_brand_of_published_test_numbers(number: str, expected: str) -> None:
    assert luhn_valid(number)
    assert brand(number) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("2220", "unknown"),  # just below the 2-series
        ("2221", "mastercard"),
        ("2720", "mastercard"),
        ("2721", "unknown"),  # just above it
        ("5099", "unknown"),
        ("5100", "mastercard"),
        ("5599", "mastercard"),
        ("5600", "unknown"),
        ("3400", "amex"),
        ("3700", "amex"),
        ("3500", "unknown"),
        ("3527", "unknown"),
        ("3528", "jcb"),
        ("3589", "jcb"),
        ("3000", "diners"),
        ("3059", "diners"),
        ("3060", "unknown"),
        ("6011", "discover"),
        ("6012", "unknown"),
        ("6439", "unknown"),
        ("6440", "discover"),
        ("6499", "discover"),
        ("6500", "discover"),
        ("6200", "unionpay"),
        ("9999", "unknown"),
        ("1234", "unknown"),
    ],
)
def test_brand_range_edges(prefix: str, expected: str) -> None:
    assert brand(prefix + "000000000000") == expected


@given(valid_numbers)
def test_generated_numbers_are_valid(number: str) -> None:
    assert luhn_valid(number)


@given(valid_numbers, st.data())
def test_changing_one_digit_breaks_a_valid_number(number: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(number) - 1), label="position")
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != number[i]]), label="digit")
    assert not luhn_valid(number[:i] + other + number[i + 1 :])


@given(valid_numbers, st.data())
def test_swapping_two_adjacent_digits_breaks_a_valid_number(
    number: str, data: st.DataObject
) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(number) - 2), label="position")
    pair = number[i : i + 2]
    # Luhn catches every adjacent transposition except 09 <-> 90 (and a no-op swap).
    if pair[0] == pair[1] or pair in ("09", "90"):
        return
    assert not luhn_valid(number[:i] + pair[::-1] + number[i + 2 :])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4242 4242 4242 4242", "4242424242424242"),
        ("4242-4242-4242-4242", "4242424242424242"),
        ("378282246310005", "378282246310005"),
        ("424242424242", "424242424242"),  # 12 digits: the shortest accepted
        ("4" * 19, "4" * 19),  # 19 digits: the longest
        ("42424242424", None),  # 11
        ("4" * 20, None),  # 20
        ("4242a42424242424", None),
        ("4242.4242.4242.4242", None),
        ("", None),
        # Digits of other scripts pass str.isdigit() but are not card numbers.
        ("\u0664\u0662" * 8, None),
        ("\uff14\uff12" * 8, None),
    ],
)
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("month", "year", "today", "is_expired"),
    [
        (12, 2030, dt.date(2030, 12, 31), False),  # valid through the last day of the month
        (12, 2030, dt.date(2031, 1, 1), True),
        (2, 2028, dt.date(2028, 2, 29), False),  # leap day
        (2, 2028, dt.date(2028, 3, 1), True),
        (1, 2030, dt.date(2029, 12, 31), False),
        (6, 2025, dt.date(2025, 6, 1), False),
        (5, 2025, dt.date(2025, 6, 1), True),
        (1, 2031, dt.date(2030, 12, 1), False),  # a later year with an earlier month
        (12, 2029, dt.date(2030, 1, 15), True),
    ],
)
def test_expiry(month: int, year: int, today: dt.date, is_expired: bool) -> None:
    assert expired(month, year, today) is is_expired


@given(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=2000, max_value=2099),
    st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 12, 31)),
)
def test_a_card_expires_after_the_last_day_of_its_month(
    month: int, year: int, today: dt.date
) -> None:
    last_day = dt.date(year, month, calendar.monthrange(year, month)[1])
    assert expired(month, year, today) is (today > last_day)


def test_expiry_defaults_to_today_in_utc() -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert not expired(today.month, today.year)
    before = today.replace(day=1) - dt.timedelta(days=1)
    assert expired(before.month, before.year)
