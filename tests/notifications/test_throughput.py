"""What one endpoint can receive, and what the delivery loop spends on it: as many requests in
flight as `PAYGATE_WEBHOOK_CONCURRENCY` allows, each slot free once the endpoint answered; the
outcomes of sends that end together in one transaction, written before a stop returns; a look
for due rows only when there can be some; a batch of events' rows in one cached insert per table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import default

from paygate.config import Settings
from paygate.ids import now_s
from paygate.notifications import repository
from paygate.notifications.messages import message_row
from paygate.notifications.tables import (
    notification_messages,
    webhook_attempts,
    webhook_deliveries,
)
from paygate.notifications.worker import NotificationService
from paygate.platform.bus import Event, LocalBus
from paygate.platform.outbox import PUBLIC_TYPES
from paygate.platform.relay import Relay
from paygate.runtime import Runtime
from tests.conftest import make_settings
from tests.notifications.conftest import Events
from tests.notifications.support import Receiver, eventually
from tests.notifications.test_delivery import endpoint, pay
from tests.support import statements


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path,
        database_url,
        webhook_allow_private=True,
        webhook_backoff_scale=1e-4,
        webhook_concurrency=3,
    )


async def delivered(runtime: Runtime) -> list[tuple[Any, ...]]:
    """(status, attempts, attempt rows) of every delivery."""
    async with runtime.db.read() as conn:
        rows = await conn.execute(
            sa.select(
                webhook_deliveries.c.status,
                webhook_deliveries.c.attempts,
                sa.select(sa.func.count())
                .where(webhook_attempts.c.delivery_id == webhook_deliveries.c.id)
                .scalar_subquery(),
            )
        )
        return [tuple(r) for r in rows]


async def test_an_endpoint_gets_as_many_at_once_as_the_setting_allows(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    receiver.behave("/slow", delay_s=0.4)
    await endpoint(client, auth, receiver.url("/slow"), ["payment.created"])
    for _ in range(7):
        await pay(client, auth)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/slow")) == 7, timeout_s=10)
    assert receiver.behaviours["/slow"].peak == 3
    await settles(lambda: delivered(runtime), [("succeeded", 1, 1)] * 7)


async def test_outcomes_that_end_together_are_recorded_in_one_transaction(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    loop = notifier.loop
    record = loop._record
    sizes: list[int] = []

    async def watched(batch: list[Any]) -> list[BaseException | None]:
        if not sizes:  # the first batch waits until every send has come back
            await eventually(lambda: len(batch) + len(loop._outcomes._queue) == 3)
        sizes.append(len(batch))
        return await record(batch)

    loop._record = watched  # type: ignore[method-assign]
    loop._outcomes._run = watched
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.created"])
    for _ in range(3):
        await pay(client, auth)
    await events.relay_all()
    await settles(lambda: delivered(runtime), [("succeeded", 1, 1)] * 3)
    # Three outcomes, fewer transactions: those that came back while one was written shared
    # the next.
    assert sum(sizes) == 3 and len(sizes) < 3, sizes
    assert len(receiver.at("/hooks")) == 3


async def settles(read: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Until `await read()` equals `expected` (a send's answer reaches the receiver a moment
    before its outcome is recorded), or fail."""
    got = None
    for _ in range(500):
        got = await read()
        if got == expected:
            return
        await asyncio.sleep(0.02)
    assert got == expected


@pytest.fixture
async def patient(runtime: Runtime) -> AsyncIterator[NotificationService]:
    """A service whose loop polls only every 5 s: it looks when it is woken, and no more."""
    service = NotificationService(runtime, timeout_s=3.0, poll_s=5.0)
    task = asyncio.create_task(service.run())
    yield service
    await service.stop()
    assert task.done()


def count_claims(service: NotificationService, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    claims = {"deliveries": 0, "messages": 0}
    loop = service.loop
    deliveries, messages = loop._claim_deliveries, loop._messages.claim

    async def claim_deliveries(*args: Any) -> Any:
        claims["deliveries"] += 1
        return await deliveries(*args)

    async def claim_messages(*args: Any) -> Any:
        claims["messages"] += 1
        return await messages(*args)

    monkeypatch.setattr(loop, "_claim_deliveries", claim_deliveries)
    monkeypatch.setattr(loop._messages, "claim", claim_messages)
    return claims


async def test_sends_that_end_wake_the_loop_only_for_rows_left_waiting_for_a_slot(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    patient: NotificationService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = Events(runtime, patient)
    receiver.behave("/slow", delay_s=0.2)
    await endpoint(client, auth, receiver.url("/fast"), ["payment.created"])
    for _ in range(3):
        await pay(client, auth)
    await asyncio.sleep(0.1)  # the loop's first look, at its start, is over
    claims = count_claims(patient, monkeypatch)
    await events.relay_all()
    await settles(lambda: delivered(runtime), [("succeeded", 1, 1)] * 3)
    await asyncio.sleep(0.2)
    # New rows the loop has slots for are handed to it as they commit: no look for them, none
    # per finished send, and no look for messages, none of which is due.
    assert claims == {"deliveries": 0, "messages": 0}, claims

    # Seven more to a slow endpoint that takes 3 at a time (the setting): up to three are handed
    # over, and the loop looks for the rest as slots free up, without waiting for its poll.
    await endpoint(client, auth, receiver.url("/slow"), ["payment.created"])
    for _ in range(7):
        await pay(client, auth)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/slow")) == 7, timeout_s=4)
    assert receiver.behaviours["/slow"].peak == 3
    assert claims["deliveries"] >= 1  # those past the first three waited for a claim


async def test_an_endpoint_slot_is_free_once_the_endpoint_has_answered(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    events: Events,
    notifier: NotificationService,
) -> None:
    # The outcomes are held back from the database: the endpoint, which takes 3 at a time,
    # still gets all six, since a slot is the endpoint's request, not the outcome's record.
    loop, written = notifier.loop, asyncio.Event()
    record = loop._outcomes._run

    async def held(batch: list[Any]) -> list[BaseException | None]:
        await written.wait()
        return await record(batch)

    loop._outcomes._run = held
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.created"])
    for _ in range(6):
        await pay(client, auth)
    await events.relay_all()
    await eventually(lambda: len(receiver.at("/hooks")) == 6, timeout_s=5)
    assert await delivered(runtime) == [("pending", 0, 0)] * 6  # none recorded yet
    written.set()
    await settles(lambda: delivered(runtime), [("succeeded", 1, 1)] * 6)


async def test_a_batch_of_deliveries_is_one_statement_compiled_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    notifier: NotificationService,
) -> None:
    # Each batch's rows go in one statement, whose compiled form is reused: the first batch may
    # compile it, every later one finds it cached. A redelivered batch adds nothing.
    inserts: list[Any] = []

    def seen_statement(
        _conn: Any, _cursor: Any, statement: str, _p: Any, context: Any, _m: Any
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_DELIVERIES"):
            inserts.append(context.cache_hit)

    engine = runtime.db.engine.sync_engine
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.created"])
    for _ in range(5):
        await pay(client, auth)
    bus, seen = LocalBus(), []

    async def batch(events: list[Event]) -> None:
        seen.extend(events)

    bus.subscribe("notifications", sorted(PUBLIC_TYPES), batch, batch=batch)
    await Relay(runtime.db, bus).drain(10)
    sa.event.listen(engine, "before_cursor_execute", seen_statement)
    try:
        await notifier.on_events(seen[:2])
        await notifier.on_events(seen[2:])
        await notifier.on_events(seen)  # delivered again, as a broker may
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen_statement)
    assert len(inserts) == 3
    assert inserts[1:] == [default.CACHE_HIT] * 2
    await settles(lambda: delivered(runtime), [("succeeded", 1, 1)] * 5)
    assert len(receiver.at("/hooks")) == 5


async def test_rows_past_one_statement_s_limit_are_all_inserted_once(
    runtime: Runtime,
) -> None:
    # 2,500 rows of 17 values: more than SQLite takes in one statement (32,766 values), so
    # they go in several, and the ids returned are those of every row inserted, and only those.
    def row(i: int) -> dict[str, Any]:
        return message_row(
            merchant_id="mer_1",
            channel="email",
            kind="receipt",
            dedupe_key=f"key-{i}",
            recipient="someone@example.com",
            body_text="Thank you",
            give_up_at=now_s() + 3600,
            due=now_s(),
        )

    async with runtime.db.transaction() as conn:
        first = await repository.insert_ignoring_duplicates(
            conn,
            notification_messages,
            [row(i) for i in range(2_500)],
            ("dedupe_key",),
            returning=notification_messages.c.id,
        )
    async with runtime.db.transaction() as conn:
        again = await repository.insert_ignoring_duplicates(
            conn,
            notification_messages,
            [row(i) for i in range(2_498, 2_503)],
            ("dedupe_key",),
            returning=notification_messages.c.dedupe_key,
        )
    assert len(set(first)) == 2_500
    assert sorted(again) == ["key-2500", "key-2501", "key-2502"]
    async with runtime.db.read() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(notification_messages))
    assert count == 2_503


async def test_a_stop_writes_the_outcomes_it_has_before_it_returns(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: Receiver,
    patient: NotificationService,
) -> None:
    # The endpoint has answered and the outcome waits to be written when the service stops:
    # it is written before `stop` returns, not sent again after a restart.
    events = Events(runtime, patient)
    loop, answered = patient.loop, asyncio.Event()
    record = loop._outcomes._run

    async def slow(batch: list[Any]) -> list[BaseException | None]:
        answered.set()
        await asyncio.sleep(0.3)
        return await record(batch)

    loop._outcomes._run = slow
    await endpoint(client, auth, receiver.url("/hooks"), ["payment.created"])
    await pay(client, auth)
    await events.relay_all()
    await asyncio.wait_for(answered.wait(), timeout=5)
    await patient.stop()
    assert await delivered(runtime) == [("succeeded", 1, 1)]


async def test_outcomes_are_written_together_and_one_whose_delivery_is_gone_is_dropped(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, receiver: Receiver
) -> None:
    hook = await endpoint(client, auth, receiver.url("/hooks"), ["payment.created"])
    rows = [
        row
        for n in range(3)
        for row in repository.delivery_rows(
            f"evt_{n}", "payment.created", [hook["id"]], due=0.0, give_up_at=1e12
        )
    ]
    async with runtime.db.transaction() as conn:
        await repository.insert_deliveries(conn, rows)
        gone = webhook_deliveries.c.id == rows[2]["id"]  # its endpoint was deleted meanwhile
        await conn.execute(webhook_deliveries.delete().where(gone))
    outcomes = [
        {
            "delivery_id": row["id"],
            "status": status,
            "attempts": 1,
            "next_attempt_at": retry_at,
            "attempt": {
                "id": f"whd_{n}",
                "event_id": row["event_id"],
                "endpoint_id": hook["id"],
                "attempt": 1,
                "status": "succeeded" if status == "succeeded" else "failed",
                "response_status": 200 if status == "succeeded" else 500,
                "error": None,
                "duration_ms": 3,
                "next_attempt_at": retry_at,
                "created": 1_700_000_000,
            },
        }
        for n, (row, status, retry_at) in enumerate(
            zip(
                rows,
                ["succeeded", "pending", "succeeded"],
                [None, 2_000_000_000, None],
                strict=True,
            )
        )
    ]
    with statements(runtime.db) as sent:
        async with runtime.db.single_write() as conn:
            await repository.record_outcomes(conn, outcomes)
    # PostgreSQL: one statement for every outcome (one round trip); SQLite: the update and
    # the insert, each for every outcome.
    assert len(sent) == (2 if runtime.db.is_sqlite else 1), sent
    async with runtime.db.read() as conn:
        kept = list(
            await conn.execute(
                sa.select(
                    webhook_deliveries.c.id,
                    webhook_deliveries.c.status,
                    webhook_deliveries.c.next_attempt_at,
                    webhook_deliveries.c.locked_until,
                ).order_by(webhook_deliveries.c.id)
            )
        )
        tried = await conn.execute(
            sa.select(webhook_attempts.c.id, webhook_attempts.c.delivery_id).order_by(
                webhook_attempts.c.id
            )
        )
        assert [(r.id, r.status, r.locked_until) for r in kept] == [
            (rows[0]["id"], "succeeded", None),
            (rows[1]["id"], "pending", None),
        ]
        assert [tuple(r) for r in tried] == [("whd_0", rows[0]["id"]), ("whd_1", rows[1]["id"])]
    assert [r.next_attempt_at for r in kept][1] == 2_000_000_000  # the retry's time
