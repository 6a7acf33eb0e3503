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


class RecordingBus(HeldBus):
    """Publishes at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()

    def published(self) -> list[str]:
        return [e["data"]["object"]["id"] for batch in self.batches for e in batch]


async def _emit(db: Database, object_id: str) -> None:
    async with db.transaction() as conn:
        obj = {"id": object_id, "amount": 100}
        await emit(conn, type="payment.created", obj=obj, merchant_id="mch_1", sequence=1)


async def _until(check: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.005)


def _count_reads(relay: Relay, after_read: Any = None) -> list[int]:
    """Count the relay's reads of the outbox; `after_read(n)` runs once the n-th returned."""
    reads = [0]
    read = relay._next_batch

    async def counted() -> Any:
        rows = await read()
        reads[0] += 1
        if after_read is not None:
            await after_read(reads[0])
        return rows

    relay._next_batch = counted  # type: ignore[method-assign]
    return reads


async def test_a_woken_relay_reads_once_per_batch(database_url: str) -> None:
    """`paygate serve`: every commit wakes the relay, so a batch that took every unsent event is
    not followed by a read that finds nothing; without a wake it would wait the whole `idle_s`."""
    db = Database(database_url)
    bus = RecordingBus()
    relay = Relay(db, bus, woken=True, idle_s=60)  # type: ignore[arg-type]
    reads = _count_reads(relay)
    task = asyncio.create_task(relay.run())
    try:
        await _until(lambda: reads[0] == 1)  # the first look, at start
        for n in range(3):
            await _emit(db, f"pay_{n}")
            relay.wake()
            await _until(lambda n=n: len(bus.published()) == n + 1)
        await asyncio.sleep(0.05)
        assert bus.published() == ["pay_0", "pay_1", "pay_2"]
        assert reads[0] == 1 + 3  # two a batch before
    finally:
        task.cancel()
        await relay.wait_idle()
        await db.dispose()


@pytest.mark.parametrize("woken", [True, False])
async def test_an_event_committed_after_the_read_is_published_at_once(
    database_url: str, woken: bool
) -> None:
    """An event committed after a read took its batch: woken, its commit's wake brings it;
    otherwise (scale-out, where other processes commit without waking the relay) the read after
    every batch that found something does. Either way, well before `idle_s`."""
    db = Database(database_url)
    bus = RecordingBus()
    relay = Relay(db, bus, woken=woken, idle_s=60)  # type: ignore[arg-type]

    async def commit_another(n: int) -> None:
        if n == 2:  # the read that took pay_0 has returned
            await _emit(db, "pay_1")
            if woken:
                relay.wake()

    reads = _count_reads(relay, commit_another)
    task = asyncio.create_task(relay.run())
    try:
        await _until(lambda: reads[0] == 1)
        await _emit(db, "pay_0")
        relay.wake()
        await _until(lambda: len(bus.published()) == 2)
        assert bus.published() == ["pay_0", "pay_1"]
    finally:
        task.cancel()
        await relay.wait_idle()
        await db.dispose()


async def test_a_woken_relay_finds_an_unwoken_commit_at_its_poll(database_url: str) -> None:
    """`paygate serve` with `paygate settle` beside it: the other process's commit wakes
    nobody here, and the relay's poll (`idle_s`) finds it; between polls it reads nothing."""
    db = Database(database_url)
    bus = RecordingBus()
    relay = Relay(db, bus, woken=True, idle_s=0.4)  # type: ignore[arg-type]
    reads = _count_reads(relay)
    task = asyncio.create_task(relay.run())
    try:
        await _until(lambda: reads[0] == 1)
        await _emit(db, "pay_0")  # no wake
        loop = asyncio.get_running_loop()
        committed = loop.time()
        await _until(lambda: bus.published() == ["pay_0"])
        assert loop.time() - committed < 2.0
        looked = reads[0]
        await asyncio.sleep(1.0)
        assert reads[0] - looked <= 3  # one a poll, where 50 ms polls would read 20 times
    finally:
        task.cancel()
        await relay.wait_idle()
        await db.dispose()
