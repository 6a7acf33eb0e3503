"""A burst of 200 concurrent payments through the whole in-process pipeline, on SQLite and
PostgreSQL: each with its own idempotency key, a mix of test cards (declines and screening
included) and of `capture` true and false. Every one reaches its outcome, with one bank operation
each (checked in the bank's own audit listing) and one event per transition.

In a file of its own: on SQLite every write queues on the one writer, and the burst alone takes
most of a file's time budget."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from paygate.config import Settings
from paygate.payments.attempts import OPEN
from paygate.pipeline import Pipeline
from paygate.platform.db.tables import bank_attempts, outbox, payments
from paygate.runtime import Runtime
from tests.conftest import make_settings, scale_out
from tests.processor.records import bank_ops, eventually
from tests.support import idem, payment_body


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    # A burst must not meet the merchant's rate limit; recovery looks again at every pass.
    return make_settings(
        tmp_path,
        database_url,
        recovery_backoff_scale=1e-5,
        default_tier="unlimited",
        **scale_out(request, database_url),
    )


MIX = [
    # card, capture, status, the bank's operation and answer (None: screening declined)
    ("4242424242424242", True, "succeeded", ("sale", "approved")),
    ("5555555555554444", False, "requires_capture", ("authorize", "approved")),
    ("4000000000000002", True, "failed", ("sale", "declined")),
    ("4000000000009995", False, "failed", ("authorize", "declined")),
    ("4000000000009235", True, "requires_review", ("authorize", "approved")),
    ("4100000000000019", False, "failed", None),
]


async def test_two_hundred_concurrent_payments(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    cases = [MIX[i % len(MIX)] for i in range(200)]

    async def create(number: str, capture: bool) -> str:
        body = payment_body(card={"number": number}, capture=capture)
        r = await client.post("/v1/payments", json=body, headers={**auth, **idem()})
        assert r.status_code == 202, r.text
        payment_id: str = r.json()["id"]
        return payment_id

    # Polled rather than waited on: 200 waiters re-reading would only slow the writers.
    ids = await asyncio.gather(*(create(number, capture) for number, capture, _, _ in cases))

    async def unsettled() -> int:
        async with runtime.db.read() as conn:
            busy = await conn.scalar(
                sa.select(sa.func.count()).where(payments.c.status.in_(("pending", "processing")))
            )
            open_ = await conn.scalar(
                sa.select(sa.func.count()).where(bank_attempts.c.status.in_(OPEN))
            )
        return int(busy or 0) + int(open_ or 0)

    await eventually(unsettled, lambda n: n == 0, timeout_s=60, every_s=0.2)

    async with runtime.db.read() as conn:
        status = dict((await conn.execute(sa.select(payments.c.id, payments.c.status))).all())
        rows = (await conn.execute(sa.select(outbox.c.object_id, outbox.c.type))).all()
    events = Counter((object_id, type_) for object_id, type_ in rows)
    audits = await asyncio.gather(*(bank_ops(bank, pid) for pid in ids))
    for pid, (number, _, want, op), ops in zip(ids, cases, audits, strict=True):
        assert status[pid] == want, number
        assert ops == ([] if op is None else [(op[0], op[0], op[1], 1999)]), number
        assert events[(pid, f"payment.{want}")] == 1, number
    # Not one event twice, internal ones included: the relay hands each outbox row over once
    # when nothing fails (a duplicate `payment.fraud_assessed` here caught the relay publishing a
    # batch again that it had just marked sent).
    duplicated = {key: n for key, n in events.items() if n > 1}
    assert duplicated == {}
