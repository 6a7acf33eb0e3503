"""Amounts and currencies: ISO 4217 exponents, currency codes, the human form of an amount."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate import money

# Exponents as the ISO 4217 maintenance agency publishes them; a few differ from CLDR (ISK, for
# one, has 0 in ISO 4217 and in CLDR's cash digits, but some libraries give it 2).
ISO_EXPONENTS = {
    "usd": 2,
    "eur": 2,
    "jpy": 0,
    "krw": 0,
    "isk": 0,
    "vnd": 0,
    "kwd": 3,
    "bhd": 3,
    "jod": 3,
    "clf": 4,
    "uyw": 4,
}


@pytest.mark.parametrize(("code", "expected"), sorted(ISO_EXPONENTS.items()))
def test_exponent_follows_iso_4217(code: str, expected: int) -> None:
    assert money.exponent(code) == expected
    assert money.is_currency(code)


@pytest.mark.parametrize("code", ["xau", "xag", "xdr", "xxx", "xts"])
def test_codes_without_a_minor_unit_are_refused(code: str) -> None:
    # Gold, silver, SDR, "no currency" and the testing code have no minor unit: a card payment
    # cannot carry them.
    assert money.exponent(code) is None
    assert not money.is_currency(code)


@pytest.mark.parametrize(
    "code",
    [
        "USD",
        "Usd",
        "usD",
        "",
        "us",
        "usdd",
        "zzz",
        "u$d",
        "12a",
        "us ",
        "\uff55\uff53\uff44",
        "üsd",
        "usd\n",
    ],
)
def test_is_currency_refuses_upper_case_and_junk(code: str) -> None:
    assert not money.is_currency(code)


@given(st.text(max_size=6))
def test_is_currency_only_for_lowercase_codes_with_an_exponent(code: str) -> None:
    if money.is_currency(code):
        assert len(code) == 3 and code.isascii() and code.islower()
        assert money.exponent(code) is not None


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1999, "usd", "19.99 USD"),
        (5, "usd", "0.05 USD"),
        (100, "usd", "1.00 USD"),
        (0, "usd", "0.00 USD"),
        (-1999, "usd", "-19.99 USD"),
        (-5, "usd", "-0.05 USD"),
        (500, "jpy", "500 JPY"),
        (-500, "jpy", "-500 JPY"),
        (1999, "kwd", "1.999 KWD"),
        (1, "kwd", "0.001 KWD"),
        (12345, "clf", "1.2345 CLF"),
        (money.MAX_AMOUNT, "usd", "99999999.99 USD"),
    ],
)
def test_format_amount(amount: int, currency: str, text: str) -> None:
    assert money.format_amount(amount, currency) == text


@given(
    st.integers(min_value=-money.MAX_AMOUNT, max_value=money.MAX_AMOUNT),
    st.sampled_from(sorted(ISO_EXPONENTS)),
)
def test_format_amount_reads_back_as_the_same_minor_units(amount: int, currency: str) -> None:
    number, code = money.format_amount(amount, currency).split(" ")
    assert code == currency.upper()
    exp = ISO_EXPONENTS[currency]
    # Exactly `exp` digits after the point, none when the currency has no minor unit.
    assert ("." in number) == (exp > 0)
    if exp:
        assert len(number.split(".")[1]) == exp
    assert Decimal(number).scaleb(exp) == amount
