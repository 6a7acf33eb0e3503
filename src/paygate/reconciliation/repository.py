"""All SQL of reconciliation: our side of a day's money movements, and the stored results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id
from paygate.ledger.tables import ledger_entries, ledger_postings
from paygate.payments.attempts import reference
from paygate.platform.db.tables import bank_attempts
from paygate.reconciliation.models import Break, Movement, Result
from paygate.reconciliation.tables import reconciliation_breaks, reconciliation_runs

# Ledger entries that move money through the bank-clearing account, as the bank sees it.
BANK_KINDS = ("capture", "refund")
_CHUNK = 500

E, P, A = ledger_entries.c, ledger_postings.c, bank_attempts.c
RUNS, BREAKS = reconciliation_runs.c, reconciliation_breaks.c


async def our_movements(conn: AsyncConnection, start: int, end: int) -> list[Movement]:
    """What we say moved through the bank with `start <= time < end` (Unix seconds): every
    bank-clearing posting of a capture or refund entry, under the reference of the bank call
    behind it; and the reversal of a late sale (an approved sale whose payment had already
    failed, refunded at once), which the attempts record and the ledger never books."""
    query = (
        sa.select(E.id, E.kind, E.payment_id, E.refund_id, E.created, P.currency, P.amount)
        .select_from(ledger_entries.join(ledger_postings, P.entry_id == E.id))
        .where(
            E.kind.in_(BANK_KINDS),
            P.account.like("platform:%:bank_clearing"),
            E.created >= start,
            E.created < end,
        )
        .order_by(E.created, E.id)
    )
    rows = list((await conn.execute(query)).all())
    charged = await _charge_operations(conn, {r.payment_id for r in rows if r.kind == "capture"})
    found = []
    for r in rows:
        if r.kind == "refund":
            ref = reference(r.payment_id, "refund", r.refund_id)
            op = "refund"
        else:
            op = charged.get(r.payment_id, "capture")
            ref = reference(r.payment_id, op)
        found.append(Movement(ref, op, abs(int(r.amount)), r.currency, int(r.created), r.id))
    return found + await _reversals(conn, start, end)


async def _charge_operations(conn: AsyncConnection, payment_ids: set[str]) -> dict[str, str]:
    """Per payment, the bank operation that charged it: `sale` or `capture`."""
    found: dict[str, str] = {}
    ids = sorted(payment_ids)
    for i in range(0, len(ids), _CHUNK):
        query = sa.select(A.payment_id, A.operation).where(
            A.payment_id.in_(ids[i : i + _CHUNK]),
            A.operation.in_(("sale", "capture")),
            A.status == "succeeded",
        )
        for payment_id, operation in (await conn.execute(query)).all():
            found[payment_id] = operation
    return found


async def _reversals(conn: AsyncConnection, start: int, end: int) -> list[Movement]:
    refund = bank_attempts.alias("reversal")
    booked = sa.exists().where(E.payment_id == A.payment_id, E.kind == "capture")
    reversed_ = sa.exists().where(
        refund.c.payment_id == A.payment_id,
        refund.c.operation == "refund",
        refund.c.refund_id.is_(None),
        refund.c.status == "succeeded",
    )
    query = (
        sa.select(A.id, A.operation, A.reference, A.amount, A.currency, A.updated)
        .where(A.status == "succeeded", A.updated >= start, A.updated < end)
        .where(
            sa.or_(
                sa.and_(A.operation == "refund", A.refund_id.is_(None)),
                sa.and_(A.operation == "sale", ~booked, reversed_),
            )
        )
        .order_by(A.updated, A.id)
    )
    return [
        Movement(r.reference, r.operation, int(r.amount), r.currency, int(r.updated), r.id)
        for r in (await conn.execute(query)).all()
    ]


async def save(conn: AsyncConnection, result: Result, now: int) -> str:
    """Replace the day's run and breaks with `result`, in the caller's transaction. The run row
    is written first: its row lock serializes two runs of one day on PostgreSQL."""
    day = result.day.isoformat()
    run_id = new_id("rcn")
    values: dict[str, Any] = {
        "id": run_id,
        "status": result.status,
        "matched": result.matched,
        "bank_rows": result.bank_rows,
        "ledger_rows": result.ledger_rows,
        "totals": [{"currency": t.currency, "ours": t.ours, "bank": t.bank} for t in result.totals],
        "breaks_by_kind": result.by_kind(),
        "created": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(reconciliation_runs).values(date=day, **values)
    await conn.execute(upsert.on_conflict_do_update(index_elements=["date"], set_=values))
    await conn.execute(reconciliation_breaks.delete().where(BREAKS.date == day))
    rows = [_break_row(day, run_id, b, now) for b in result.breaks]
    if rows:
        await conn.execute(reconciliation_breaks.insert(), rows)
    return run_id


def _break_row(day: str, run_id: str, b: Break, now: int) -> dict[str, Any]:
    return {
        "id": new_id("rcb"),
        "date": day,
        "run_id": run_id,
        "kind": b.kind,
        "reference": b.reference,
        "payment_id": b.payment_id[:40],
        "refund_id": b.refund_id[:40] if b.refund_id else None,
        "operation": b.operation,
        "our_amount": b.ours.amount if b.ours else None,
        "our_currency": b.ours.currency if b.ours else None,
        "bank_amount": b.bank.amount if b.bank else None,
        "bank_currency": b.bank.currency if b.bank else None,
        "details": b.details,
        "created": now,
    }


async def get_run(conn: AsyncConnection, day: dt.date) -> sa.RowMapping | None:
    query = sa.select(reconciliation_runs).where(RUNS.date == day.isoformat())
    return (await conn.execute(query)).mappings().one_or_none()


async def breaks_of(conn: AsyncConnection, day: dt.date) -> Sequence[sa.RowMapping]:
    query = (
        sa.select(reconciliation_breaks)
        .where(BREAKS.date == day.isoformat())
        .order_by(BREAKS.reference, BREAKS.kind, BREAKS.id)
    )
    return (await conn.execute(query)).mappings().all()
