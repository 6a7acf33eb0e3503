"""The attribute catalogue and a payment's attributes (paygate.fraud.attributes), pure."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.fraud.attributes import (
    CATALOGUE,
    VELOCITY,
    ItemRefused,
    PaymentFacts,
    attributes_of,
    card_country,
    ip_country,
    normalize_item,
)
from paygate.fraud.rules_dryrun import VelocityReplay


@given(st.integers(0, 4_102_444_800))  # up to 2100
def test_time_attributes_are_utc(created: int) -> None:
    when = dt.datetime.fromtimestamp(created, dt.UTC)
    attrs = attributes_of(PaymentFacts(amount=1, currency="usd", created=created))
    assert attrs["hour_of_day"] == when.hour
    assert attrs["is_weekend"] is (when.weekday() >= 5)


def test_attributes_leave_unknown_values_out_and_check_velocity_names() -> None:
    facts = PaymentFacts(
        amount=1999,
        currency="USD",
        created=0,
        card_brand="Visa",
        card_bin="411111",
        card_fingerprint="abcdefghijklmnop",
        email="A@B.co",
        ip_address="10.0.0.1",
    )
    attrs = attributes_of(facts, {"payments_per_ip_daily": 2})
    assert attrs == {
        "amount": 1999,
        "currency": "usd",
        "hour_of_day": 0,
        "is_weekend": False,
        "card_brand": "visa",
        "card_bin": "411111",
        "card_fingerprint": "abcdefghijklmnop",
        "email": "a@b.co",
        "ip_address": "10.0.0.1",
        "payments_per_ip_daily": 2,
    }  # no card_country (BIN not in the table), no ip_country (not a test network)
    with pytest.raises(KeyError):
        attributes_of(facts, {"payments_per_phone_daily": 1})
    assert set(attrs) <= set(CATALOGUE) and set(VELOCITY) <= set(CATALOGUE)


def test_countries_come_only_from_the_documented_tables() -> None:
    assert [card_country(b) for b in ("424242", "555555", "353011", "620000", "411111", None)] == [
        "US",
        "US",
        "JP",
        "CN",
        None,
        None,
    ]
    ips = ("192.0.2.10", "198.51.100.1", "203.0.113.255", "2001:db8::1", "8.8.8.8", "bad", None)
    assert [ip_country(ip) for ip in ips] == ["US", "GB", "DE", "FR", None, None, None]


@pytest.mark.parametrize(
    ("kind", "value", "canonical"),
    [
        ("email", " Jenny@Example.COM ", "jenny@example.com"),
        ("ip_address", "2001:0DB8::0001", "2001:db8::1"),
        ("ip_address", "192.0.2.1", "192.0.2.1"),
        ("card_bin", "424242", "424242"),
        ("card_fingerprint", "abcdefghijkl2345", "abcdefghijkl2345"),
    ],
)
def test_list_items_are_canonical(kind: str, value: str, canonical: str) -> None:
    assert normalize_item(kind, value) == canonical


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("card_fingerprint", "4242424242424242"),
        ("card_fingerprint", "4242-4242-4242-4242"),
        ("email", "4242424242424242"),
        ("ip_address", "4242 4242 4242 4242"),
        ("card_bin", "4242424242424242"),
        ("card_bin", "42424"),
        ("card_fingerprint", "ABCDEFGHIJKL2345"),
        ("email", "no-at-sign"),
        ("ip_address", "999.1.1.1"),
        ("phone", "123"),
    ],
)
def test_list_items_refused_never_quote_the_value(kind: str, value: str) -> None:
    with pytest.raises(ItemRefused) as info:
        normalize_item(kind, value)
    assert value not in str(info.value) and "4242" not in str(info.value)


def test_a_replay_of_some_names_counts_as_the_full_one() -> None:
    full, some = VelocityReplay(), VelocityReplay({"payments_per_email_daily", "amount"})
    assert set(some.windows) == {("email", 86_400)}
    for i in range(50):
        keys = {"card": f"c{i % 3}", "email": f"e{i % 2}", "ip": None}
        created = 1_700_000_000 + i * 1_000
        want = full.before(created, "usd", keys)
        assert some.before(created, "usd", keys) == {
            "payments_per_email_daily": want["payments_per_email_daily"]
        }
        full.add(created, "usd", 100, keys)
        some.add(created, "usd", 100, keys)
