"""What accepting a payment writes: the card in the vault, its payment method, the payment, the
CVC, the first log entry and `payment.created`, and the key's record. On PostgreSQL the seven
go as one statement (paygate.platform.db.deferred), so that a create costs one round trip for
its rows, not seven; a refused create writes none of them, only the key's record."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from paygate.platform.db.tables import (
    idempotency_keys,
    outbox,
    payment_methods,
    payments,
    transaction_log,
    vault_cards,
    vault_cvcs,
)
from paygate.runtime import Runtime
from tests.support import idem, payment_body, statements

TABLES = (vault_cards, payment_methods, payments, vault_cvcs, transaction_log, outbox)


async def counts(rt: Runtime) -> list[int]:
    async with rt.db.read() as conn:
        return [
            int(await conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
            for t in (*TABLES, idempotency_keys)
        ]


async def test_a_create_writes_its_rows_together(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    before = await counts(runtime)
    with statements(runtime.db) as sent:
        r = await client.post("/v1/payments", json=payment_body(), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    seen = [s for s in sent if s.upper().startswith(("INSERT", "WITH"))]
    if runtime.db.is_sqlite:
        assert len(seen) == len(TABLES) + 1
    else:
        assert len(seen) == 1
        together = seen[0]
        assert together.lstrip().upper().startswith("WITH")
        assert all(f"INSERT INTO {t.name} " in together for t in (*TABLES, idempotency_keys))
    assert [a - b for a, b in zip(await counts(runtime), before, strict=True)] == [1] * 7
    async with runtime.db.read() as conn:
        query = sa.select(payments.c.status, payments.c.amount, payment_methods.c.last4).join(
            payment_methods, payment_methods.c.id == payments.c.payment_method_id
        )
        row = (await conn.execute(query.where(payments.c.id == r.json()["id"]))).one()
    assert tuple(row) == ("pending", 1999, "4242")


async def test_a_refused_create_writes_none_of_them(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    before = await counts(runtime)
    body = payment_body(customer={"id": "cus_nobody"})
    r = await client.post("/v1/payments", json=body, headers={**auth, **idem()})
    assert r.status_code == 400 and r.json()["error"]["param"] == "customer.id"
    after = await counts(runtime)
    assert after[:-1] == before[:-1]  # only the key's record, of the refusal
    assert after[-1] == before[-1] + 1
