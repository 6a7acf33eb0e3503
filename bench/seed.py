"""Bulk seeding for bench/growth.py: many merchants and many stored payments, fast.

Merchants (and their API keys) are made by the gateway's own service,
`paygate.merchants.service.create_merchant`, a batch per transaction. Payments are clones of
one real payment's row (made through the API, read back with the gateway's repository), inserted
with `executemany` a few thousand rows per transaction: a payment through the API costs tens of
milliseconds of CPU, a million of them would take hours. Only the `payments` table is cloned
(status reads and lists read nothing else); the clones share the template's payment method row
and have no transaction log, attempts, ledger entries or events.

Clone ids come from `paygate.ids.new_id` with times spread over the past `days` days, in
ascending order, so they sort as real ones do and keyset pagination walks them as it would.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from paygate.config import Settings
from paygate.ids import new_id
from paygate.merchants.service import create_merchant
from paygate.payments.repository import get_by_id
from paygate.platform.db.engine import Database
from paygate.platform.db.tables import payments

DAY_MS = 86_400_000
# Of the clones: 85 % succeeded (one in 17 of them refunded in full), 10 % failed, 5 % canceled.
STATUS_MIX = (("succeeded", 80), ("refunded", 5), ("failed", 10), ("canceled", 5))


@dataclass(frozen=True)
class Merchant:
    id: str
    key: str


@dataclass
class Seeded:
    """What one seeding step did, and a sample of the rows it wrote for the reads and lists."""

    rows: int = 0
    seconds: float = 0.0
    sample: list[tuple[str, str]] = field(default_factory=list)  # (merchant id, payment id)

    def figures(self) -> dict[str, Any]:
        rate = round(self.rows / self.seconds) if self.seconds else None
        return {"rows": self.rows, "seconds": round(self.seconds, 2), "rows_per_s": rate}


def settings_for(env: dict[str, str]) -> Settings:
    """The gateway's settings read from the gateway's own environment (its data folder, its
    database URL), so that keys are hashed with the same HMAC key it checks them with."""
    outside = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    ours = {k: v for k, v in env.items() if k.startswith("PAYGATE_")}
    with mock.patch.dict(os.environ, {**outside, **ours}, clear=True):
        return Settings()


async def merchants(settings: Settings, count: int, start: int, batch: int = 500) -> list[Merchant]:
    """`count` merchants on the `unlimited` tier (no rate limit), `batch` per transaction."""
    db = Database(settings.resolved_database_url)
    hmac_key = settings.hmac_key()
    made: list[Merchant] = []
    try:
        while len(made) < count:
            async with db.transaction() as conn:
                for _ in range(min(batch, count - len(made))):
                    name = f"Growth Shop {start + len(made)}"
                    m = await create_merchant(
                        conn, hmac_key, name=name, email=None, tier="unlimited"
                    )
                    made.append(Merchant(m["id"], m["api_key"]))
    finally:
        await db.dispose()
    return made


async def template(settings: Settings, payment_id: str) -> dict[str, Any]:
    """The row of a real payment, as the gateway's repository reads it."""
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            row = await get_by_id(conn, payment_id)
    finally:
        await db.dispose()
    if row is None:
        raise RuntimeError(f"template payment {payment_id} is not in the database")
    return dict(row)


def _clone(
    tpl: dict[str, Any], pid: str, merchant_id: str, ms: int, rng: random.Random
) -> dict[str, Any]:
    """The template with a new id, owner, time, amount and outcome, each row within the table's
    checks (captured ≤ amount, refunded ≤ captured)."""
    status = rng.choices([s for s, _ in STATUS_MIX], [w for _, w in STATUS_MIX])[0]
    amount = rng.randint(100, 50_000)  # minor units
    captured = amount if status in ("succeeded", "refunded") else 0
    created = ms // 1000
    return {
        **tpl,
        "id": pid,
        "merchant_id": merchant_id,
        "amount": amount,
        "amount_capturable": 0,
        "amount_captured": captured,
        "amount_refunded": amount if status == "refunded" else 0,
        "amount_refund_pending": 0,
        "status": "succeeded" if status == "refunded" else status,
        "capture": True,
        "failure_code": "card_declined" if status == "failed" else None,
        "failure_message": "The card was declined." if status == "failed" else None,
        "version": 3,
        "created": created,
        "updated": created + rng.randint(0, 120),
    }


async def clone_payments(
    settings: Settings,
    tpl: dict[str, Any],
    count: int,
    owner: Callable[[random.Random], str],
    *,
    seed: int,
    days: int = 90,
    batch: int = 2000,
    sample_size: int = 20_000,
) -> Seeded:
    """`count` clones of `tpl`; `owner(rng)` picks each row's merchant id. Rows go in id order
    (ascending time over the past `days` days, the last hour left out); every k-th row is kept
    in the sample so that it spans the whole time range."""
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000 - 3_600_000
    start_ms = now_ms - days * DAY_MS
    step = max(1, count // sample_size)
    out = Seeded()
    db = Database(settings.resolved_database_url)
    t0 = time.perf_counter()
    try:
        done = 0
        while done < count:
            rows = []
            for i in range(done, min(done + batch, count)):
                ms = start_ms + (i * (now_ms - start_ms)) // count
                row = _clone(tpl, new_id("pay", now_ms=ms), owner(rng), ms, rng)
                rows.append(row)
                if i % step == 0:
                    out.sample.append((row["merchant_id"], row["id"]))
            async with db.transaction() as conn:
                await conn.execute(payments.insert(), rows)
            done += len(rows)
    finally:
        await db.dispose()
    out.rows, out.seconds = count, time.perf_counter() - t0
    return out
