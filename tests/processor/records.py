"""Readers of our own tables for the processor tests: bank attempts, the transaction log, the
outbox and dead letters. The bank's side is always read from the bank's own audit listing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from paygate.platform.db import Database
from paygate.platform.db.tables import bank_attempts, dead_letters, outbox, transaction_log

T = TypeVar("T")


async def attempts_of(db: Database, payment_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(bank_attempts)
        .where(bank_attempts.c.payment_id == payment_id)
        .order_by(bank_attempts.c.created, bank_attempts.c.id)
    )
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def attempt_states(db: Database, payment_id: str) -> dict[str, str]:
    """Reference → status of every attempt of the payment."""
    return {a["reference"]: a["status"] for a in await attempts_of(db, payment_id)}


async def log_of(db: Database, payment_id: str) -> list[dict[str, Any]]:
    query = sa.select(transaction_log).where(transaction_log.c.payment_id == payment_id)
    async with db.read() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
    # Ids order by millisecond only; entries of one millisecond keep no order between them, so
    # callers compare counts, or entries of distinct types.
    return sorted(rows, key=lambda r: r["id"])


async def bank_log(db: Database, payment_id: str) -> list[tuple[str, str | None]]:
    """(type, outcome) of the `bank.*` entries of the transaction log."""
    return [
        (e["type"], e["details"].get("outcome"))
        for e in await log_of(db, payment_id)
        if e["type"].startswith("bank.")
    ]


async def events_of(db: Database, object_id: str) -> list[str]:
    """Types of the outbox events about one object, in outbox order."""
    query = (
        sa.select(outbox.c.type).where(outbox.c.object_id == object_id).order_by(outbox.c.position)
    )
    async with db.read() as conn:
        return list((await conn.execute(query)).scalars().all())


async def event_payload(db: Database, object_id: str, type_: str) -> dict[str, Any]:
    """The one outbox event of `type_` about an object (a real event, to hand to a consumer)."""
    query = sa.select(outbox.c.payload).where(
        outbox.c.object_id == object_id, outbox.c.type == type_
    )
    async with db.read() as conn:
        [payload] = (await conn.execute(query)).scalars().all()
    event: dict[str, Any] = payload
    return event


async def dead_letters_of(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(sa.select(dead_letters))).mappings().all()]


async def bank_ops(bank: httpx.AsyncClient, payment_id: str) -> list[tuple[str, str, str, int]]:
    """(reference suffix, operation, status, amount) of what the bank applied, in its order."""
    r = await bank.get("/v1/operations", params={"payment": payment_id})
    assert r.status_code == 200, r.text
    return [
        (o["reference"].split(":", 1)[1], o["operation"], o["status"], o["amount"])
        for o in r.json()["data"]
    ]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout_s: float = 10.0,
    every_s: float = 0.05,
) -> T:
    """Poll `probe` until `done` holds; fail with the last value seen after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s; last seen: {value!r}")
        await asyncio.sleep(every_s)


async def set_faults(bank: httpx.AsyncClient, method: str = "PATCH", **faults: Any) -> None:
    """Change the simulator's fault switch (`PUT` starts from its start-up settings)."""
    r = await bank.request(method, "/v1/admin/faults", json=faults)
    assert r.status_code == 200, r.text
