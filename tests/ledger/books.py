"""A small driver of the books for tests: merchants, payments, captures and refunds written as
the gateway writes them (the payments table and the ledger service, in one transaction each),
without the bank, so that property tests can run many sequences quickly."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paygate.ids import new_id, now_s
from paygate.ledger import models
from paygate.ledger import service as ledger
from paygate.ledger.models import Pricing
from paygate.ledger.tables import balance_transactions, ledger_entries, ledger_postings
from paygate.merchants import profile, terms
from paygate.merchants.service import create_merchant
from paygate.platform.db.tables import payment_methods, payments, refunds
from paygate.runtime import Runtime
from paygate.vault import repository as vault

IBANS = {"eur": "DE89370400440532013000", "gbp": "GB82WEST12345698765432"}


async def new_merchant(rt: Runtime, *, bank: bool = True, name: str = "Books") -> str:
    async with rt.db.transaction() as conn:
        merchant = await create_merchant(conn, rt.hmac_key, name=name, email=None, tier="standard")
        if bank:
            account = profile.bank_account(IBANS["eur"], "COBADEFFXXX", f"{name} GmbH")
            await terms.set_bank_account(conn, rt.keyring, merchant["id"], account)
    return str(merchant["id"])


async def new_payment(
    rt: Runtime, merchant_id: str, amount: int, currency: str, *, livemode: bool = False
) -> str:
    """An authorized payment (`requires_capture`), nothing captured yet."""
    now = now_s()
    async with rt.db.transaction() as conn:
        token = await vault.store_card(conn, rt.keyring, "4242424242424242", "fp")
        pm = new_id("pm")
        await conn.execute(
            payment_methods.insert().values(
                id=pm,
                merchant_id=merchant_id,
                livemode=livemode,
                card_token=token,
                brand="visa",
                last4="4242",
                exp_month=12,
                exp_year=2030,
                fingerprint="fp",
                created=now,
            )
        )
        pid = new_id("pay")
        await conn.execute(
            payments.insert().values(
                id=pid,
                merchant_id=merchant_id,
                livemode=livemode,
                amount=amount,
                amount_capturable=amount,
                amount_captured=0,
                amount_refunded=0,
                amount_refund_pending=0,
                currency=currency,
                status="requires_capture",
                capture=False,
                payment_method_id=pm,
                payment_method={"type": "card"},
                metadata={},
                version=1,
                created=now,
                updated=now,
            )
        )
    return pid


async def _payment(conn: AsyncConnection, payment_id: str) -> sa.RowMapping:
    query = sa.select(payments).where(payments.c.id == payment_id)
    return (await conn.execute(query)).mappings().one()


async def capture(
    rt: Runtime, payment_id: str, amount: int, *, pricing: Pricing, delay_days: int = 0
) -> None:
    """Capture `amount` (≤ the authorized amount; the rest is released)."""
    async with rt.db.transaction() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == payment_id)
            .values(amount_captured=amount, amount_capturable=0, status="succeeded")
        )
        row = await _payment(conn, payment_id)
        await ledger.record_capture(
            conn, row, amount, pricing=pricing, payout_delay_days=delay_days
        )


async def start_refund(rt: Runtime, payment_id: str, amount: int) -> dict[str, Any]:
    """A pending refund: its amount reserved against the payment and the available balance."""
    async with rt.db.transaction() as conn:
        row = await _payment(conn, payment_id)
        await conn.execute(
            payments.update()
            .where(payments.c.id == payment_id)
            .values(amount_refund_pending=row["amount_refund_pending"] + amount)
        )
        refund = {
            "id": new_id("re"),
            "merchant_id": row["merchant_id"],
            "livemode": row["livemode"],
            "payment_id": payment_id,
            "amount": amount,
            "currency": row["currency"],
            "status": "pending",
            "metadata": {},
            "version": 1,
            "created": now_s(),
            "updated": now_s(),
        }
        await conn.execute(refunds.insert().values(**refund))
        await ledger.record_refund_reserved(conn, refund)
    return refund


async def finish_refund(
    rt: Runtime, refund: dict[str, Any], *, succeeded: bool, pricing: Pricing
) -> None:
    async with rt.db.transaction() as conn:
        row = await _payment(conn, refund["payment_id"])
        values = {"amount_refund_pending": row["amount_refund_pending"] - refund["amount"]}
        if succeeded:
            values["amount_refunded"] = row["amount_refunded"] + refund["amount"]
        await conn.execute(
            payments.update().where(payments.c.id == refund["payment_id"]).values(**values)
        )
        await conn.execute(
            refunds.update()
            .where(refunds.c.id == refund["id"])
            .values(status="succeeded" if succeeded else "failed")
        )
        await ledger.record_refund_result(conn, refund, row, succeeded=succeeded, pricing=pricing)


async def owed(rt: Runtime, merchant_id: str) -> dict[str, dict[str, int]]:
    """currency → kind → what the gateway owes the merchant in that account (credit balances
    shown positive)."""
    found: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(models.MERCHANT_KINDS, 0))
    async with rt.db.read() as conn:
        for row in await ledger.repository.account_balances(conn, merchant_id):
            # Both modes together: the invariants hold for each and so for their sum.
            found[row.currency][row.account.rsplit(":", 1)[1]] -= int(row.balance)
    return found


async def fees(rt: Runtime, merchant_id: str) -> dict[str, int]:
    """Net fees per currency, from the merchant's balance transactions."""
    b = balance_transactions.c
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(b.currency, sa.func.sum(b.fee))
            .where(b.merchant_id == merchant_id)
            .group_by(b.currency)
        )
        return {cur: int(total) for cur, total in rows}


async def payment_rows(rt: Runtime, merchant_id: str) -> list[sa.RowMapping]:
    async with rt.db.read() as conn:
        query = sa.select(payments).where(payments.c.merchant_id == merchant_id)
        return list((await conn.execute(query)).mappings().all())


async def clearing_by_payment(rt: Runtime, merchant_id: str) -> dict[str, dict[str, int]]:
    """payment → {"captured", "refunded"} as the ledger's bank clearing account has them."""
    e, p = ledger_entries.c, ledger_postings.c
    found: dict[str, dict[str, int]] = defaultdict(lambda: {"captured": 0, "refunded": 0})
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(e.payment_id, e.kind, sa.func.sum(p.amount))
            .select_from(ledger_postings.join(ledger_entries, p.entry_id == e.id))
            .where(e.merchant_id == merchant_id, p.account.like("platform:%:bank_clearing"))
            .group_by(e.payment_id, e.kind)
        )
        for payment_id, kind, total in rows:
            if kind == "capture":
                found[payment_id]["captured"] += int(total)
            elif kind == "refund":
                found[payment_id]["refunded"] -= int(total)
    return found


async def payouts_beyond_available(rt: Runtime) -> list[str]:
    """Payout entries that took more than the available balance held just before them (in the
    order the postings were written): none, ever."""
    e, p = ledger_entries.c, ledger_postings.c
    bad = []
    async with rt.db.read() as conn:
        payouts = await conn.execute(
            sa.select(e.id, p.id.label("posting"), p.account, p.amount)
            .select_from(ledger_postings.join(ledger_entries, p.entry_id == e.id))
            .where(e.kind == "payout", p.account.like("%:available"))
        )
        for entry_id, posting_id, account, amount in payouts.all():
            before = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(p.amount), 0)).where(
                    p.account == account, p.id < posting_id
                )
            )
            if int(amount) > -int(before or 0):
                bad.append(entry_id)
    return bad
