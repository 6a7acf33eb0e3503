"""Settlement rules and the pain.001 file, without a database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from paygate import money
from paygate.config import Settings
from paygate.merchants.profile import bank_account
from paygate.settlements import models, pain001
from tests.settlements.payout_files import schema, validate

PLATFORM = bank_account("DE89370400440532013000", "COBADEFFXXX", "Paygate Development")
MERCHANT = bank_account("GB82 WEST 1234 5698 7654 32", None, "Acme Ltd")


def test_cutoff_is_the_end_of_the_day_or_now_when_that_is_earlier() -> None:
    day = dt.date(2026, 11, 24)
    midnight = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp())
    assert models.cutoff_of(day, "24:00", now=midnight + 10 * 86_400) == midnight + 86_400
    assert models.cutoff_of(day, "18:30", now=midnight + 10 * 86_400) == midnight + 66_600
    assert models.cutoff_of(day, "24:00", now=midnight + 3600) == midnight + 3600
    assert models.parse_cutoff("00:00") == 0
    for bad in ("25:00", "12:60", "noon", "24:01", "12"):
        with pytest.raises(ValueError):
            models.parse_cutoff(bad)


def test_the_cutoff_setting_is_checked_when_settings_load(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, settlement_cutoff="18:30").settlement_cutoff == "18:30"
    for bad in ("24:30", "7:00", "18h30"):
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, settlement_cutoff=bad)


def test_totals_add_up() -> None:
    txns = [
        {"type": "charge", "amount": 10_000, "fee": 320, "net": 9_680},
        {"type": "charge", "amount": 500, "fee": 45, "net": 455},
        {"type": "refund", "amount": -2_000, "fee": -58, "net": -1_942},
    ]
    totals = models.Totals.of(txns)
    assert totals == models.Totals(gross=10_500, refunds=2_000, fees=307, net=8_193)
    assert totals.gross - totals.refunds - totals.fees == totals.net


@pytest.mark.parametrize(
    ("net", "available", "bank", "expected"),
    [
        (1_000, 1_000, True, ("paid", 1_000)),
        (1_000, 5_000, True, ("paid", 1_000)),
        (1_000, 999, True, ("carried_forward", 0)),  # a pending refund holds part of it
        (0, 1_000, True, ("carried_forward", 0)),
        (-500, -500, True, ("carried_forward", 0)),  # a negative balance is never paid
        (1_000, 1_000, False, ("payout_blocked", 0)),
    ],
)
def test_what_a_settlement_pays(
    net: int, available: int, bank: bool, expected: tuple[str, int]
) -> None:
    assert models.decide(net, available, bank) == expected


@given(
    amount=st.integers(0, 10**15),
    currency=st.sampled_from(["usd", "eur", "jpy", "kwd", "clf", "bhd", "isk"]),
)
def test_major_units_are_exact(amount: int, currency: str) -> None:
    exp = money.exponent(currency)
    assert exp is not None
    text = models.major_units(amount, currency)
    assert Decimal(text) * (10**exp) == amount
    assert ("." in text) == (exp > 0) and (not exp or len(text.split(".")[1]) == exp)


def test_major_units_by_exponent() -> None:
    assert models.major_units(1999, "usd") == "19.99"
    assert models.major_units(5, "eur") == "0.05"
    assert models.major_units(500, "jpy") == "500"
    assert models.major_units(1500, "kwd") == "1.500"
    assert models.major_units(10**17 + 1, "usd") == "1000000000000000.01"  # no float rounding


def _transfer(amount: int, currency: str) -> pain001.Transfer:
    return pain001.Transfer(
        reference="stl_01M884B24C0XE2323TKC21DW6Z",
        amount=amount,
        currency=currency,
        execution_date=dt.date(2026, 11, 25),
        remittance="Paygate settlement 2026-11-24",
        created=dt.datetime(2026, 11, 25, 1, 2, 3, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (123_456, "eur", "1234.56"),
        (1, "usd", "0.01"),
        (70_000, "jpy", "70000"),
        (1, "kwd", "0.001"),
    ],
)
def test_payout_files_are_valid_pain_001(amount: int, currency: str, text: str) -> None:
    fields = validate(pain001.build(_transfer(amount, currency), PLATFORM, MERCHANT))
    assert fields["amount"] == text and fields["ctrl_sum"] == Decimal(text)
    assert fields["currency"] == currency.upper()
    assert fields["debtor_iban"] == "DE89370400440532013000"
    assert fields["creditor_iban"] == "GB82WEST12345698765432"
    assert fields["creditor_name"] == "Acme Ltd" and fields["creditor_bic"] is None
    assert fields["service_level"] == ("SEPA" if currency == "eur" else None)


def test_creditor_agent_and_long_names_stay_within_the_schema() -> None:
    creditor = bank_account("FR1420041010050500013M02606", "BNPAFRPP", "N" * 140)
    fields = validate(pain001.build(_transfer(10, "eur"), PLATFORM, creditor))
    assert fields["creditor_bic"] == "BNPAFRPP"


def test_the_schema_catches_a_broken_file() -> None:
    # The validation the tests rely on is real: a file without its debtor account is refused.
    document = pain001.build(_transfer(10, "eur"), PLATFORM, MERCHANT).decode()
    start = document.index("<DbtrAcct>")
    broken = document[:start] + document[document.index("</DbtrAcct>") + 11 :]
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema().validate(broken)
