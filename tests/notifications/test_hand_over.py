"""A delivery the running loop has a slot for is inserted leased and sent as its insert
commits, with no claim: never claimed by the loop (or by another process) meanwhile, sent once
however often its event comes, and left to the loop's claims when no slot is free, the insert
fails or the loop has stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.notifications import repository as repo
from paygate.notifications.tables import webhook_deliveries
from paygate.notifications.worker import NotificationService
from paygate.runtime import Runtime
from tests.notifications.conftest import Events
from tests.notifications.support import Receiver, eventually
from tests.notifications.test_delivery import endpoint, pay, recorded
from tests.support import statements

D = webhook_deliveries.c


def claims_of(notifier: NotificationService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the deliveries the loop claims from here on."""
    claimed: list[str] = []
    original = repo.lease_deliveries

    async def lease(conn: Any, ids: list[str], until: float | None) -> None:
        if until is not None:
            claimed.extend(ids)
        await original(conn, ids, until)

    monkeypatch.setattr(repo, "lease_deliveries", lease)
    return claimed


async def delivery(runtime: Runtime, event_id: str) -> sa.RowMapping:
    async with runtime.db.read() as conn:
        query = sa.select(webhook_deliveries).where(D.event_id == event_id)
        return (await conn.execute(query)).mappings().one()


async def payment_event(
    client: httpx.AsyncClient, auth: dict[str, str], events: Events, merchant_id: str
) -> dict[str, Any]:
    p = await pay(client, auth)
    return await events.emit("payment.succeeded", {**p, "status": "succeeded"}, merchant_id, 3)


async def test_a_new_delivery_is_sent_as_it_commits_without_a_claim(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    e = await endpoint(client, auth, receiver.url("/hooks"), ["payment.succeeded"])
    event = await payment_event(client, auth, events, merchant["id"])
    claimed = claims_of(notifier, monkeypatch)
    with statements(runtime.db) as seen:
        await notifier.on_events([event])
        inserted = [s for s in seen if s.startswith("INSERT INTO webhook_deliveries")]
    assert len(inserted) == 1
    row = await delivery(runtime, event["id"])
    # Leased as inserted, for as long as a claim would have held it.
    assert row["locked_until"] is not None and row["locked_until"] > row["next_attempt_at"]
    await eventually(lambda: len(receiver.at("/hooks")) == 1)
    await recorded(client, auth, e["id"], 1, "succeeded")
    assert claimed == []

    # The event again (a broker redelivers): no second delivery, no second request.
    await notifier.on_events([event])
    await notifier.on_events([event])
    await notifier.pump()
    assert len(receiver.at("/hooks")) == 1 and claimed == []
    assert notifier.loop._reserved == 0 and not notifier.loop._per_endpoint


async def test_with_no_free_slot_the_delivery_waits_for_the_loop_to_claim_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A service of its own, one slot per endpoint (the fixture's would send it).
    e = await endpoint(client, auth, receiver.url("/hooks"), ["payment.succeeded"])
    notifier = NotificationService(runtime, timeout_s=3.0, poll_s=0.05, per_endpoint=1)
    events = Events(runtime, notifier)
    task = asyncio.create_task(notifier.run())
    try:
        await asyncio.sleep(0)
        assert notifier.loop.reserve(e["id"])  # the endpoint's one slot, held
        event = await payment_event(client, auth, events, merchant["id"])
        claimed = claims_of(notifier, monkeypatch)
        await notifier.on_events([event])
        row = await delivery(runtime, event["id"])
        assert row["locked_until"] is None  # not taken: the loop's to claim
        await asyncio.sleep(0.2)
        assert receiver.at("/hooks") == []
        notifier.loop.unreserve(e["id"])
        notifier.wake()
        await eventually(lambda: len(receiver.at("/hooks")) == 1)
        await recorded(client, auth, e["id"], 1, "succeeded")
        assert claimed == [row["id"]]
    finally:
        await notifier.stop()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failed_insert_gives_the_slots_back(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.succeeded"])
    event = await payment_event(client, auth, events, merchant["id"])

    async def broken(conn: Any, rows: list[dict[str, Any]]) -> set[str]:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(repo, "insert_deliveries", broken)
    with pytest.raises(RuntimeError):
        await notifier.on_events([event])
    assert notifier.loop._reserved == 0 and not notifier.loop._per_endpoint
    monkeypatch.undo()
    await notifier.on_events([event])  # the bus delivers it again: sent then
    await eventually(lambda: len(receiver.at("/hooks")) == 1)


async def test_a_delivery_inserted_as_the_loop_stops_is_handed_back_unleased(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    merchant: dict[str, Any],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.succeeded"])
    event = await payment_event(client, auth, events, merchant["id"])
    original = repo.insert_deliveries

    async def stop_then_insert(conn: Any, rows: list[dict[str, Any]]) -> set[str]:
        assert all(r["locked_until"] is not None for r in rows)  # reserved before the stop
        await notifier.loop.stop()
        return await original(conn, rows)

    monkeypatch.setattr(repo, "insert_deliveries", stop_then_insert)
    await notifier.on_events([event])
    row = await delivery(runtime, event["id"])
    # Pending and free for the next loop to claim at once, not when a lease runs out.
    assert (row["status"], row["attempts"], row["locked_until"]) == ("pending", 0, None)
    assert receiver.at("/hooks") == []
    assert notifier.loop._reserved == 0 and not notifier.loop._per_endpoint
