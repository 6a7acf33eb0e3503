"""Amounts and currencies: integers in the currency's minor unit, ISO 4217 exponents.

Exponents come from the `iso4217` package (the ISO maintenance agency's table), not from CLDR,
which disagrees for some currencies. Currencies without a minor unit (gold, SDR, …) are refused.
"""

from __future__ import annotations

from functools import lru_cache

from iso4217 import Currency

# The largest amount one payment may carry, in minor units (99,999,999.99 in a 2-exponent currency).
MAX_AMOUNT = 9_999_999_999


@lru_cache(maxsize=512)
def exponent(currency: str) -> int | None:
    """The minor-unit exponent of a lowercase ISO 4217 code, or None when it is not a currency
    that card payments can carry."""
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        return None
    try:
        found = Currency(currency.upper())
    except ValueError:
        return None
    exp = found.exponent
    return exp if isinstance(exp, int) else None


def is_currency(code: str) -> bool:
    return code == code.lower() and exponent(code) is not None


def format_amount(amount: int, currency: str) -> str:
    """Human form for messages and files, e.g. (1999, "usd") → "19.99 USD"."""
    exp = exponent(currency) or 0
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**exp)
    body = f"{whole}.{frac:0{exp}d}" if exp else str(whole)
    return f"{sign}{body} {currency.upper()}"
