"""All SQL of the ledger."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.ledger.models import Postings, balanced
from paygate.ledger.tables import balance_transactions, ledger_entries, ledger_postings
from paygate.platform.db import deferred


async def post(
    conn: AsyncConnection,
    *,
    kind: str,
    merchant_id: str,
    currency: str,
    postings: Postings,
    payment_id: str | None = None,
    refund_id: str | None = None,
    settlement_id: str | None = None,
) -> str:
    """Write one balanced journal entry; refuses an unbalanced one."""
    if not balanced(postings):
        raise ValueError(f"unbalanced {kind} entry")
    entry_id = new_id("je")
    now = now_s()
    await deferred.insert(
        conn,
        ledger_entries,
        dict(
            id=entry_id,
            kind=kind,
            merchant_id=merchant_id,
            currency=currency,
            payment_id=payment_id,
            refund_id=refund_id,
            settlement_id=settlement_id,
            created=now,
        ),
    )
    rows = [
        {
            "entry_id": entry_id,
            "account": account,
            "currency": currency,
            "amount": amount,
            "merchant_id": None if account.startswith("platform:") else merchant_id,
            "created": now,
        }
        for account, amount in postings
        if amount != 0
    ]
    if rows:  # an entry of zero amounts (a release of a charge its fee took whole) posts nothing
        await deferred.insert(conn, ledger_postings, rows)
    return entry_id


async def add_balance_transaction(conn: AsyncConnection, row: dict[str, Any]) -> str:
    row = {"id": new_id("txn"), "created": now_s(), "settlement_id": None, **row}
    await deferred.insert(conn, balance_transactions, row)
    return str(row["id"])


async def account_balances(conn: AsyncConnection, merchant_id: str | None = None) -> list[Any]:
    """(account, currency, sum) of every account, or of one merchant's."""
    p = ledger_postings.c
    query = (
        sa.select(p.account, p.currency, sa.func.sum(p.amount).label("balance"))
        .group_by(p.account, p.currency)
        .order_by(p.currency, p.account)
    )
    if merchant_id is not None:
        query = query.where(p.merchant_id == merchant_id)
    return list((await conn.execute(query)).all())


async def due_for_release(conn: AsyncConnection, now: int, limit: int = 500) -> list[sa.RowMapping]:
    b = balance_transactions.c
    query = (
        sa.select(balance_transactions)
        .where(b.status == "pending", b.available_on <= now)
        .order_by(b.available_on)
        .limit(limit)
    )
    return list((await conn.execute(query)).mappings().all())


async def mark_available(conn: AsyncConnection, txn_id: str) -> bool:
    b = balance_transactions.c
    result = await conn.execute(
        balance_transactions.update()
        .where(b.id == txn_id, b.status == "pending")
        .values(status="available")
    )
    return result.rowcount == 1


async def refunded_so_far(conn: AsyncConnection, payment_id: str) -> int:
    """What earlier refunds of a payment took (for the cumulative fee rounding)."""
    e, p = ledger_entries.c, ledger_postings.c
    query = (
        sa.select(sa.func.coalesce(sa.func.sum(p.amount), 0))
        .select_from(ledger_postings.join(ledger_entries, p.entry_id == e.id))
        .where(e.payment_id == payment_id, e.kind == "refund", p.account.like("%:reserved"))
    )
    return int(await conn.scalar(query) or 0)


async def charge_fee(conn: AsyncConnection, payment_id: str) -> int:
    b = balance_transactions.c
    fee = await conn.scalar(sa.select(b.fee).where(b.type == "charge", b.source == payment_id))
    return int(fee or 0)


async def lock_balance(conn: AsyncConnection, merchant_id: str, currency: str) -> None:
    """Hold, until the transaction ends, the right to take money out of a merchant's available
    balance in `currency`: a payout and a refund's reservation queue here, so a payout always
    sees every reservation committed before it (PostgreSQL advisory lock; SQLite has one writer
    at a time already)."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(f"balance:{merchant_id}:{currency}".encode(), digest_size=8).digest()
    await conn.execute(
        sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True)))
    )


async def account_balance(conn: AsyncConnection, account: str) -> int:
    p = ledger_postings.c
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(p.amount), 0)).where(p.account == account)
    )
    return int(total or 0)
