"""When a payment rests (what `Prefer: wait` waits for): a resting status and no bank attempt
still open, read in one statement with the payment itself."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from paygate.errors import NotFound
from paygate.payments import attempts
from paygate.payments import service as payments
from paygate.platform.db.tables import payments as payments_table
from paygate.runtime import Runtime
from tests.support import idem, payment_body, statements


async def rest_of(rt: Runtime, merchant_id: str, payment_id: str) -> tuple[str, bool]:
    async with rt.db.read() as conn:
        with statements(rt.db) as sent:
            payment, rests = await payments.get_with_rest(conn, merchant_id, False, payment_id)
    assert len(sent) == 1, sent
    return payment["status"], rests


async def set_status(rt: Runtime, payment_id: str, status: str) -> None:
    async with rt.db.transaction() as conn:
        await conn.execute(
            sa.update(payments_table).where(payments_table.c.id == payment_id).values(status=status)
        )


async def test_a_payment_rests_at_a_resting_status_with_no_open_attempt(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    payment_id = r.json()["id"]
    async with runtime.db.read() as conn:
        row = await conn.execute(
            sa.select(payments_table.c.merchant_id).where(payments_table.c.id == payment_id)
        )
        merchant_id = row.scalar_one()

    assert await rest_of(runtime, merchant_id, payment_id) == ("pending", False)

    # Failed at its deadline while the sale is still open at the bank: it may yet move.
    async with runtime.db.transaction() as conn:
        sale = await attempts.create(
            conn, payment_id=payment_id, operation="sale", amount=1999, currency="usd"
        )
    await set_status(runtime, payment_id, "failed")
    assert await rest_of(runtime, merchant_id, payment_id) == ("failed", False)
    async with runtime.db.transaction() as conn:
        await attempts.update(conn, sale["id"], status="unknown")
    assert await rest_of(runtime, merchant_id, payment_id) == ("failed", False)

    # The look-up closed it: now the payment rests.
    async with runtime.db.transaction() as conn:
        await attempts.update(conn, sale["id"], status="failed")
    assert await rest_of(runtime, merchant_id, payment_id) == ("failed", True)
    await set_status(runtime, payment_id, "succeeded")
    assert await rest_of(runtime, merchant_id, payment_id) == ("succeeded", True)


async def test_another_merchants_payment_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    async with runtime.db.read() as conn:
        with pytest.raises(NotFound):
            await payments.get_with_rest(conn, "mer_someone_else", False, r.json()["id"])
        with pytest.raises(NotFound):
            await payments.get_with_rest(conn, "mer_someone_else", False, "pay_missing")
