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
        postings=models.capture(mid, cur, amount, fee, livemode=payment["livemode"]),
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
    """A pending refund holds its amount out of the available balance: under the balance lock,
    so that a payout running beside it sees it or runs wholly before it."""
    mid, cur = refund["merchant_id"], refund["currency"]
    await repository.lock_balance(conn, mid, cur)
    await repository.post(
        conn,
        kind="refund_reserve",
        merchant_id=mid,
        currency=cur,
        payment_id=refund["payment_id"],
        refund_id=refund["id"],
        postings=models.reserve_refund(mid, cur, refund["amount"], livemode=refund["livemode"]),
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
            postings=models.refund_failed(mid, cur, amount, livemode=refund["livemode"]),
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
        postings=models.refund_succeeded(mid, cur, amount, fee_back, livemode=refund["livemode"]),
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


async def available(
    conn: AsyncConnection, merchant_id: str, currency: str, *, livemode: bool
) -> int:
    """What the gateway owes the merchant in this mode and may pay out now (negative when
    refunds took more than was available: carried forward, never paid)."""
    account = models.merchant_account(merchant_id, currency, "available", livemode=livemode)
    return -await repository.account_balance(conn, account)


async def record_payout(
    conn: AsyncConnection,
    *,
    merchant_id: str,
    livemode: bool,
    currency: str,
    settlement_id: str,
    amount: int,
) -> None:
    """A settlement pays `amount` out of the available balance: the entry and the merchant's
    `payout` balance transaction (already covered by its settlement). The caller holds the
    balance lock and has checked `amount` against `available`."""
    await repository.post(
        conn,
        kind="payout",
        merchant_id=merchant_id,
        currency=currency,
        settlement_id=settlement_id,
        postings=models.payout(merchant_id, currency, amount, livemode=livemode),
    )
    await repository.add_balance_transaction(
        conn,
        {
            "merchant_id": merchant_id,
            "livemode": livemode,
            "currency": currency,
            "type": "payout",
            "source": settlement_id,
            "amount": -amount,
            "fee": 0,
            "net": -amount,
            "status": "available",
            "available_on": now_s(),
            "settlement_id": settlement_id,
        },
    )


async def release_due(conn: AsyncConnection, now: int | None = None) -> int:
    """Move every charge past its payout delay (as of `now`) from pending to available."""
    released = 0
    for txn in await repository.due_for_release(conn, now_s() if now is None else now):
        if await repository.mark_available(conn, txn["id"]):
            await repository.post(
                conn,
                kind="release",
                merchant_id=txn["merchant_id"],
                currency=txn["currency"],
                payment_id=txn["source"],
                postings=models.release(
                    txn["merchant_id"], txn["currency"], txn["net"], livemode=txn["livemode"]
                ),
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


async def balance(conn: AsyncConnection, merchant_id: str, livemode: bool) -> dict[str, Any]:
    """DESIGN.md section 4 balance object: what the gateway owes the merchant in the key's
    mode, by state."""
    kinds: dict[str, dict[str, int]] = {"available": {}, "pending": {}, "reserved": {}}
    for row in await repository.account_balances(conn, merchant_id):
        if models.account_mode(row.account) != models.mode(livemode):
            continue
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
