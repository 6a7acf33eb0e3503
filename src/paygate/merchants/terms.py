"""Storage of a merchant's payout terms: its bank account (the IBAN sealed under the vault's
keyring, bound to the merchant by the associated data) and its pricing and payout delay."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import now_s
from paygate.ledger.models import Pricing
from paygate.merchants import profile
from paygate.platform.db.tables import payments
from paygate.settlements.tables import merchant_bank_accounts, merchant_terms
from paygate.vault.crypto import Keyring


@dataclass(frozen=True, slots=True)
class Terms:
    pricing: Pricing
    payout_delay_days: int
    custom_pricing: bool = False


def _aad(merchant_id: str) -> bytes:
    return f"bank_account:{merchant_id}".encode()


# Read for every capture and refund: built once (docs/performance.md).
_TERMS = sa.select(merchant_terms).where(merchant_terms.c.merchant_id == sa.bindparam("match_id"))


async def terms_for(
    conn: AsyncConnection,
    merchant_id: str,
    default_delay_days: int,
    read: dict[str, Terms] | None = None,
) -> Terms:
    """The pricing and payout delay the ledger applies to this merchant now. `read`: terms
    already read in this transaction, by merchant, which this one joins (a batch's answers
    read each merchant's terms once)."""
    if read is not None and merchant_id in read:
        return read[merchant_id]
    row = (await conn.execute(_TERMS, {"match_id": merchant_id})).mappings().one_or_none()
    terms = terms_of(row, default_delay_days)
    if read is not None:
        read[merchant_id] = terms
    return terms


def terms_of(row: Mapping[Any, Any] | None, default_delay_days: int) -> Terms:
    """The terms of a `merchant_terms` row (its `pricing` and `payout_delay_days`), or the
    defaults for none."""
    if row is None:
        return Terms(Pricing(), default_delay_days)
    delay = row["payout_delay_days"]
    return Terms(
        profile.pricing_from_json(row["pricing"]),
        default_delay_days if delay is None else int(delay),
        custom_pricing=row["pricing"] is not None,
    )


# The payments of a batch, locked in id order as `payments.repository.get_many` locks them,
# each with its merchant's terms beside it (`terms_merchant` NULL: the merchant has none): the
# processor's answers, which book fees, lock and read both in one statement.
LOCKED_PAYMENTS_WITH_TERMS = (
    sa.select(
        payments,
        merchant_terms.c.merchant_id.label("terms_merchant"),
        merchant_terms.c.pricing.label("terms_pricing"),
        merchant_terms.c.payout_delay_days.label("terms_payout_delay_days"),
    )
    .select_from(
        payments.outerjoin(merchant_terms, merchant_terms.c.merchant_id == payments.c.merchant_id)
    )
    .where(payments.c.id.in_(sa.bindparam("match_ids", expanding=True)))
    .order_by(payments.c.id)
    .with_for_update(of=payments)
)


def joined_terms(row: Mapping[Any, Any], default_delay_days: int) -> Terms:
    """The terms beside a payment read with `LOCKED_PAYMENTS_WITH_TERMS`."""
    if row["terms_merchant"] is None:
        return terms_of(None, default_delay_days)
    joined = {"pricing": row["terms_pricing"], "payout_delay_days": row["terms_payout_delay_days"]}
    return terms_of(joined, default_delay_days)


async def set_terms(
    conn: AsyncConnection,
    merchant_id: str,
    *,
    pricing: Pricing | None = None,
    payout_delay_days: int | None = None,
) -> None:
    """Store the given terms (None leaves a term as it is)."""
    values: dict[str, Any] = {"updated": now_s()}
    if pricing is not None:
        values["pricing"] = profile.pricing_to_json(pricing)
    if payout_delay_days is not None:
        values["payout_delay_days"] = payout_delay_days
    t = merchant_terms.c
    done = await conn.execute(
        merchant_terms.update().where(t.merchant_id == merchant_id).values(**values)
    )
    if done.rowcount == 0:
        await conn.execute(merchant_terms.insert().values(merchant_id=merchant_id, **values))


async def set_bank_account(
    conn: AsyncConnection, keyring: Keyring, merchant_id: str, account: profile.BankAccount
) -> None:
    key_id, sealed = keyring.seal(account.iban.encode(), _aad(merchant_id))
    now = now_s()
    values = {
        "iban_key_id": key_id,
        "iban_sealed": sealed,
        "iban_last4": account.last4,
        "country": account.country,
        "bic": account.bic,
        "account_holder": account.account_holder,
        "updated": now,
    }
    b = merchant_bank_accounts.c
    done = await conn.execute(
        merchant_bank_accounts.update().where(b.merchant_id == merchant_id).values(**values)
    )
    if done.rowcount == 0:
        await conn.execute(
            merchant_bank_accounts.insert().values(merchant_id=merchant_id, created=now, **values)
        )


async def remove_bank_account(conn: AsyncConnection, merchant_id: str) -> None:
    b = merchant_bank_accounts.c
    await conn.execute(merchant_bank_accounts.delete().where(b.merchant_id == merchant_id))


async def bank_account_row(conn: AsyncConnection, merchant_id: str) -> sa.RowMapping | None:
    b = merchant_bank_accounts.c
    query = sa.select(merchant_bank_accounts).where(b.merchant_id == merchant_id)
    return (await conn.execute(query)).mappings().one_or_none()


def open_bank_account(keyring: Keyring, row: Mapping[Any, Any]) -> profile.BankAccount:
    """The full account, for a payout file only: never logged, never returned."""
    iban = keyring.open(row["iban_key_id"], row["iban_sealed"], _aad(row["merchant_id"]))
    return profile.BankAccount(
        iban=iban.decode(), bic=row["bic"], account_holder=row["account_holder"]
    )


def render_bank_account(row: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "object": "bank_account",
        "iban_last4": row["iban_last4"],
        "country": row["country"],
        "bic": row["bic"],
        "account_holder": row["account_holder"],
    }
