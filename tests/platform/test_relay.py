"""The outbox relay with several batches in flight: each committed event is published once while
its batch is out, whole (payload and trace context), and marked sent only after its publish."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from paygate.platform import tracing
from paygate.platform.db import Database
from paygate.platform.db.tables import outbox
from paygate.platform.outbox import emit
from paygate.platform.relay import Relay


class HeldBus:
    """A bus whose publishes wait until released: their batches stay in flight."""

    backend = "held"

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.release = asyncio.Event()

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def publish(self, events: list[dict[str, Any]]) -> None:
        self.batches.append(events)
        await self.release.wait()

    async def ping(self) -> bool:
        return True


async def _unpublished(db: Database) -> int:
    async with db.read() as conn:
        query = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
        return int(await conn.scalar(query) or 0)


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_batches_in_flight_publish_each_event_once(database_url: str, in_flight: int) -> None:
    db = Database(database_url)
    bus = HeldBus()
    relay = Relay(db, bus, batch_size=2, max_in_flight=in_flight)  # type: ignore[arg-type]
    try:
        async with db.transaction() as conn:
            for n in range(5):
                obj = {"id": f"pay_{n}", "amount": 100 + n}
                await emit(conn, type="payment.created", obj=obj, merchant_id="mch_1", sequence=1)

        pumped = [await relay.pump() for _ in range(in_flight)]
        assert pumped == [2, 2, 1][:in_flight]
        while len(bus.batches) < in_flight:  # each batch's publish starts in a task of its own
            await asyncio.sleep(0.01)
        published = [e for batch in bus.batches for e in batch]
        objects = [e["data"]["object"] for e in published]
        assert [o["id"] for o in objects] == [f"pay_{n}" for n in range(sum(pumped))]
        assert [o["amount"] for o in objects] == [100 + n for n in range(sum(pumped))]
        assert all(e[tracing.CARRIER_KEY][tracing.MERCHANT_HEADER] == "mch_1" for e in published)
        assert await _unpublished(db) == 5  # nothing is marked while its publish is out

        bus.release.set()
        await relay.drain(timeout_s=10)
        ids = [e["id"] for batch in bus.batches for e in batch]
        assert len(ids) == len(set(ids)) == 5
        assert await _unpublished(db) == 0
    finally:
        bus.release.set()
        await relay.wait_idle()
        await db.dispose()
