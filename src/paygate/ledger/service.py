"""Ledger use cases, run inside the transaction of the state change that causes them, so the
entry commits with it or not at all (DESIGN.md section 2, no dual writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import now_s
from paygate.ledger import models, repository

DAY_S = 86_400


async def record_capture(
    conn: AsyncConnection,
    payment: Mapping[Any, Any],
    amount: int,
    *,
    pricing: models.Pricing,
    payout_delay_days: int,
) -> int:
    """Money captured: the entry, and the merchant's balance transaction (pending until the
    payout delay passes). Returns the fee."""
    mid, cur = payment["merchant_id"], payment["currency"]
    fee = pricing.fee(amount, cur)
    await repository.post(
        conn,
        kind="capture",
        merchant_id=mid,
        currency=cur,
        payment_id=payment["id"],
        postings=models.capture(mid, cur, amount, fee),
    )
    await repository.add_balance_transaction(
        conn,
        {
            "merchant_id": mid,
            "livemode": payment["livemode"],
            "currency": cur,
            "type": "charge",
            "source": payment["id"],
            "amount": amount,
            "fee": fee,
            "net": amount - fee,
            "status": "pending",
            "available_on": now_s() + payout_delay_days * DAY_S,
        },
    )
    return fee


async def record_refund_reserved(conn: AsyncConnection, refund: Mapping[Any, Any]) -> None:
    mid, cur = refund["merchant_id"], refund["currency"]
    await repository.post(
        conn,
        kind="refund_reserve",
        merchant_id=mid,
        currency=cur,
        payment_id=refund["payment_id"],
        refund_id=refund["id"],
        postings=models.reserve_refund(mid, cur, refund["amount"]),
    )


async def record_refund_result(
    conn: AsyncConnection,
    refund: Mapping[Any, Any],
    payment: Mapping[Any, Any],
    *,
    succeeded: bool,
    pricing: models.Pricing,
) -> None:
    mid, cur, amount = refund["merchant_id"], refund["currency"], refund["amount"]
    if not succeeded:
        await repository.post(
            conn,
            kind="refund_release",
            merchant_id=mid,
            currency=cur,
            payment_id=payment["id"],
            refund_id=refund["id"],
            postings=models.refund_failed(mid, cur, amount),
        )
        return
    fee_back = 0
    if pricing.refund_fees:
        before = await repository.refunded_so_far(conn, payment["id"])
        # The fee charged at capture, whatever the pricing is today.
        fee = await repository.charge_fee(conn, payment["id"])
        fee_back = models.fee_returned(fee, payment["amount_captured"], before, amount)
    await repository.post(
        conn,
        kind="refund",
        merchant_id=mid,
        currency=cur,
        payment_id=payment["id"],
        refund_id=refund["id"],
        postings=models.refund_succeeded(mid, cur, amount, fee_back),
    )
    await repository.add_balance_transaction(
        conn,
        {
            "merchant_id": mid,
            "livemode": refund["livemode"],
            "currency": cur,
            "type": "refund",
            "source": refund["id"],
            "amount": -amount,
            "fee": -fee_back,
            "net": -amount + fee_back,
            "status": "available",
            "available_on": now_s(),
        },
    )


async def release_due(conn: AsyncConnection, now: int | None = None) -> int:
    """Move every charge past its payout delay from pending to available."""
    released = 0
    for txn in await repository.due_for_release(conn, now or now_s()):
        if await repository.mark_available(conn, txn["id"]):
            await repository.post(
                conn,
                kind="release",
                merchant_id=txn["merchant_id"],
                currency=txn["currency"],
                payment_id=txn["source"],
                postings=models.release(txn["merchant_id"], txn["currency"], txn["net"]),
            )
            released += 1
    return released


async def trial_balance(conn: AsyncConnection) -> dict[str, Any]:
    """DESIGN.md section 4: every account's balance and the totals per currency (always 0)."""
    rows = await repository.account_balances(conn)
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.currency] = totals.get(row.currency, 0) + int(row.balance)
    return {
        "object": "trial_balance",
        "data": [
            {"account": r.account, "currency": r.currency, "balance": int(r.balance)} for r in rows
        ],
        "totals": totals,
    }


async def balance(conn: AsyncConnection, merchant_id: str) -> dict[str, Any]:
    """DESIGN.md section 4 balance object: what the gateway owes the merchant, by state."""
    kinds: dict[str, dict[str, int]] = {"available": {}, "pending": {}, "reserved": {}}
    for row in await repository.account_balances(conn, merchant_id):
        kind = row.account.rsplit(":", 1)[1]
        if kind in kinds:
            # Merchant accounts carry credit (negative) balances: shown as owed amounts.
            kinds[kind][row.currency] = -int(row.balance)
    return {
        "object": "balance",
        **{
            kind: [{"amount": amount, "currency": cur} for cur, amount in sorted(by_cur.items())]
            for kind, by_cur in kinds.items()
        },
    }
