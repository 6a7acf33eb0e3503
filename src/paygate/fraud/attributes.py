"""The attributes fraud rules see (paygate.fraud.rules_lang): their catalogue, and the attribute
dict of one payment.

Payment attributes come from the stored payment: amount, currency, the card (brand, BIN,
country, keyed fingerprint; never the number), the customer's e-mail, the client's IP address
(`ip_address` of the create request) and the time (UTC). Velocity attributes count the
*earlier* payments of the same merchant and mode (never the payment itself) over a sliding
window that ends at the payment: the worker fills them from its counters, the dry run computes
them exactly from the payment history. A value that is not known (no e-mail, a BIN outside the
table below) is left out of the dict, and a comparison with a missing value is false.

Countries need no network call and no geo database: `card_country` comes from a small table of
the published test BINs (BIN_COUNTRIES), `ip_country` from the documentation address ranges of
RFC 5737 and RFC 3849 (TEST_NETWORKS), so that rules such as `card_country != ip_country` can be
tried end to end in test mode. Every other BIN or address is unknown.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.fraud.tables import fraud_assessments
from paygate.platform.db.tables import customers, payment_methods, payments

Value = int | str | bool
LIST_KINDS = ("card_fingerprint", "email", "ip_address", "card_bin")


def _same(value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: type
    description: str
    # The kind of list the attribute can be looked up in (`email in @blocked_emails`).
    list_kind: str | None = None
    # The canonical form of a string value; literals compared with it take the same form.
    normalize: Callable[[str], str] = _same


@dataclass(frozen=True, slots=True)
class Velocity:
    """How a velocity attribute is counted: earlier payments with the same `entity` value
    (card fingerprint, e-mail, IP address) within `window_s` seconds before this one; `metric`
    `count` counts them, `amount` sums their amounts in this payment's currency (minor units;
    payments in other currencies are not added)."""

    entity: str  # card | email | ip
    metric: str  # count | amount
    window_s: int


HOUR, DAY = 3_600, 86_400

VELOCITY: dict[str, Velocity] = {
    "total_payments_per_card_hourly": Velocity("card", "count", HOUR),
    "total_payments_per_card_daily": Velocity("card", "count", DAY),
    "total_amount_per_card_hourly": Velocity("card", "amount", HOUR),
    "total_amount_per_card_daily": Velocity("card", "amount", DAY),
    "payments_per_email_hourly": Velocity("email", "count", HOUR),
    "payments_per_email_daily": Velocity("email", "count", DAY),
    "payments_per_ip_hourly": Velocity("ip", "count", HOUR),
    "payments_per_ip_daily": Velocity("ip", "count", DAY),
}

_VELOCITY_TEXT = {
    "count": "number of earlier payments {per} in the last {window}",
    "amount": "sum of earlier payments' amounts {per} in the last {window}, in this currency",
}
_PER = {"card": "on the card", "email": "with the e-mail", "ip": "from the IP address"}


def _velocity_attribute(name: str, v: Velocity) -> Attribute:
    window = "hour" if v.window_s == HOUR else "24 hours"
    text = _VELOCITY_TEXT[v.metric].format(per=_PER[v.entity], window=window)
    return Attribute(name, int, text)


CATALOGUE: dict[str, Attribute] = {
    a.name: a
    for a in (
        Attribute("amount", int, "the amount in the currency's minor unit"),
        Attribute("currency", str, "ISO 4217 code, lowercase", normalize=str.lower),
        Attribute("card_brand", str, "visa, mastercard, amex, …", normalize=str.lower),
        Attribute("card_bin", str, "the card's first 6 digits", list_kind="card_bin"),
        Attribute("card_country", str, "ISO 3166 alpha-2 of the BIN", normalize=str.upper),
        Attribute(
            "card_fingerprint", str, "the card's keyed fingerprint", list_kind="card_fingerprint"
        ),
        Attribute("email", str, "the customer's e-mail", list_kind="email", normalize=str.lower),
        Attribute("ip_address", str, "the client's IP address", list_kind="ip_address"),
        Attribute("ip_country", str, "ISO 3166 alpha-2 of the IP", normalize=str.upper),
        Attribute("hour_of_day", int, "0 to 23, UTC, at creation"),
        Attribute("is_weekend", bool, "created on a Saturday or Sunday, UTC"),
        *(_velocity_attribute(name, v) for name, v in VELOCITY.items()),
    )
}

# Published test BINs of the major processors' test cards (DESIGN.md section 4) → country.
BIN_COUNTRIES: dict[str, str] = {
    "424242": "US",  # visa 4242 4242 4242 4242
    "400000": "US",  # visa test range (declines, 3-D Secure, review)
    "410000": "US",  # visa, always blocked as fraud
    "555555": "US",  # mastercard
    "222300": "US",  # mastercard 2-series
    "520082": "US",  # mastercard debit
    "510510": "US",  # mastercard prepaid
    "378282": "US",  # amex
    "371449": "US",  # amex
    "601111": "US",  # discover
    "305693": "US",  # diners
    "353011": "JP",  # jcb
    "620000": "CN",  # unionpay
}

# Documentation ranges (never routed on the internet) → a country, for trying IP rules.
TEST_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("192.0.2.0/24"), "US"),  # TEST-NET-1, RFC 5737
    (ipaddress.ip_network("198.51.100.0/24"), "GB"),  # TEST-NET-2
    (ipaddress.ip_network("203.0.113.0/24"), "DE"),  # TEST-NET-3
    (ipaddress.ip_network("2001:db8::/32"), "FR"),  # RFC 3849
)


def card_country(card_bin: str | None) -> str | None:
    return BIN_COUNTRIES.get(card_bin) if card_bin else None


def ip_country(ip: str | None) -> str | None:
    return _ip_country(ip) if ip else None


@lru_cache(maxsize=65_536)  # a dry run meets the same addresses again and again
def _ip_country(ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for network, country in TEST_NETWORKS:
        if address.version == network.version and address in network:
            return country
    return None


# --- list items ----------------------------------------------------------------------------

_FINGERPRINT = re.compile(r"^[a-z2-7]{16}$")  # paygate.vault.crypto.Keyring.fingerprint
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BIN = re.compile(r"^[0-9]{6}$")
_CARDLIKE = re.compile(r"^[0-9][0-9 -]{10,}[0-9]$")


class ItemRefused(ValueError):
    """A list value that is not of the list's kind; the message quotes nothing."""


def normalize_item(kind: str, value: str) -> str:
    """The canonical form of a list value of `kind`, or `ItemRefused`. Card numbers are never
    accepted: lists hold card fingerprints (`payment_method.card.fingerprint`)."""
    value = value.strip()
    if _CARDLIKE.match(value) and kind != "card_bin":
        raise ItemRefused(
            "This looks like a card number: lists never hold card numbers. Add the card's "
            "fingerprint (payment_method.card.fingerprint of one of its payments) to a "
            "card_fingerprint list instead."
        )
    if kind == "card_fingerprint":
        if not _FINGERPRINT.match(value):
            raise ItemRefused(
                "A card_fingerprint item is a card fingerprint: 16 characters as in "
                "payment_method.card.fingerprint."
            )
        return value
    if kind == "email":
        if len(value) > 320 or not _EMAIL.match(value):
            raise ItemRefused("An email item must be an e-mail address.")
        return value.lower()
    if kind == "ip_address":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ItemRefused("An ip_address item must be an IPv4 or IPv6 address.") from None
    if kind == "card_bin":
        if not _BIN.match(value):
            raise ItemRefused(
                "A card_bin item is the first 6 digits of a card number, never a whole number."
            )
        return value
    raise ItemRefused("Unknown kind of list.")


# --- one payment's attributes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What the attributes of a payment are built from (all of it stored with the payment)."""

    amount: int
    currency: str
    created: int
    card_brand: str | None = None
    card_bin: str | None = None
    card_fingerprint: str | None = None
    email: str | None = None
    ip_address: str | None = None


def attributes_of(facts: PaymentFacts, velocity: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The attribute dict of a payment: unknown values left out, velocity names checked."""
    days, seconds = divmod(facts.created, DAY)
    attrs: dict[str, Any] = {
        "amount": facts.amount,
        "currency": facts.currency.lower(),
        "hour_of_day": seconds // HOUR,
        "is_weekend": (days + 3) % 7 >= 5,  # 1970-01-01 was a Thursday (3, Monday being 0)
    }
    optional = {
        "card_brand": facts.card_brand.lower() if facts.card_brand else None,
        "card_bin": facts.card_bin,
        "card_country": card_country(facts.card_bin),
        "card_fingerprint": facts.card_fingerprint,
        "email": facts.email.lower() if facts.email else None,
        "ip_address": facts.ip_address,
        "ip_country": ip_country(facts.ip_address),
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    for name, value in (velocity or {}).items():
        if name not in VELOCITY:
            raise KeyError(f"unknown velocity attribute {name!r}")
        attrs[name] = int(value)
    return attrs


# A payment's method (always there) and customer (if any) beside it.
_WITH_FACTS = payments.join(
    payment_methods, payment_methods.c.id == payments.c.payment_method_id
).outerjoin(customers, customers.c.id == payments.c.customer_id)


def facts_query() -> sa.Select[Any]:
    """Payments with everything `PaymentFacts` needs (one join per fact, no JSON decoding)."""
    p, m, c = payments.c, payment_methods.c, customers.c
    return sa.select(
        p.id,
        p.amount,
        p.currency,
        p.created,
        p.status,
        p.failure_code,
        p.card_bin,
        p.ip_address,
        m.brand,
        m.fingerprint,
        c.email,
    ).select_from(_WITH_FACTS)


# The fraud worker's read of a batch: each payment whole, with its facts, and whether it has
# been screened already (an assessment is never deleted).
SCREENING = (
    sa.select(
        payments,
        payment_methods.c.brand,
        payment_methods.c.fingerprint,
        customers.c.email,
        sa.exists().where(fraud_assessments.c.payment_id == payments.c.id).label("screened"),
    )
    .select_from(_WITH_FACTS)
    .where(payments.c.id.in_(sa.bindparam("match_ids", expanding=True)))
)


def facts_of(row: Mapping[Any, Any]) -> PaymentFacts:
    return PaymentFacts(
        amount=row["amount"],
        currency=row["currency"],
        created=row["created"],
        card_brand=row["brand"],
        card_bin=row["card_bin"],
        card_fingerprint=row["fingerprint"],
        email=row["email"],
        ip_address=row["ip_address"],
    )


async def payment_attributes(
    conn: AsyncConnection, payment_id: str, velocity: Mapping[str, int] | None = None
) -> dict[str, Any] | None:
    """The attributes of a stored payment (None when there is no such payment), with the
    velocity values the caller counted."""
    row = (
        (await conn.execute(facts_query().where(payments.c.id == payment_id)))
        .mappings()
        .one_or_none()
    )
    return None if row is None else attributes_of(facts_of(row), velocity)
