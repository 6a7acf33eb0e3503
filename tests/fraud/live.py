"""Helpers of the live fraud service's tests: payments through the real HTTP API and pipeline,
and scorers that fail on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import sqlalchemy as sa

from paygate.fraud.decide import Scored
from paygate.fraud.features import Txn
from paygate.fraud.tables import fraud_assessments
from paygate.runtime import Runtime
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=10"}
REVIEW_CARD = "4000000000009235"


async def pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def get(client: httpx.AsyncClient, auth: dict[str, str], payment_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/payments/{payment_id}", headers=auth)
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def wait_status(
    client: httpx.AsyncClient, auth: dict[str, str], payment_id: str, status: str, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        payment = await get(client, auth, payment_id)
        if payment["status"] == status or loop.time() > deadline:
            return payment
        await asyncio.sleep(0.1)


async def stored_assessments(rt: Runtime, payment_id: str) -> list[dict[str, Any]]:
    async with rt.db.read() as conn:
        rows = await conn.execute(
            sa.select(fraud_assessments)
            .where(fraud_assessments.c.payment_id == payment_id)
            .order_by(fraud_assessments.c.id)
        )
        return [dict(r) for r in rows.mappings()]


class FailingScorer:
    async def score_many(self, txns: Sequence[Txn], *, explain_from: Sequence[int]) -> list[Scored]:
        raise RuntimeError("model store unreachable")


class SlowScorer:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def score_many(self, txns: Sequence[Txn], *, explain_from: Sequence[int]) -> list[Scored]:
        await asyncio.sleep(self.seconds)
        return [Scored(1, (), "slow") for _ in txns]


class FixedScorer:
    def __init__(self, score: int) -> None:
        self.value = score

    async def score_many(self, txns: Sequence[Txn], *, explain_from: Sequence[int]) -> list[Scored]:
        return [Scored(self.value, ("amount",), "fixed") for _ in txns]
