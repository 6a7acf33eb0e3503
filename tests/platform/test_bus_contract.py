"""One contract for every event bus: the in-process bus and NATS JetStream pass the same tests.

At least once, each consumer group sees every event of its types, a failing handler is retried
and then dead-lettered, and (NATS) the processes of one consumer group share the work: no event
is handled by two of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from paygate.platform.bus import Bus, Event, LocalBus
from paygate.platform.nats_bus import NatsBus

DeadLetters = list[tuple[str, str, int]]


def event(type_: str = "payment.created", **extra: Any) -> Event:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": type_,
        "created": 0,
        "sequence": 1,
        "livemode": False,
        "data": {"object": {"id": "pay_x", **extra}},
    }


@pytest.fixture(params=["local", pytest.param("nats", marks=pytest.mark.nats)])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """A factory of connected buses (several NATS clients stand for several processes); each
    test gets its own consumer names, so durable consumers never leak between tests."""
    made: list[Bus] = []
    url = request.getfixturevalue("nats_url") if request.param == "nats" else None
    prefix = f"t{uuid.uuid4().hex[:10]}"  # streams of this test only

    async def factory(dead: DeadLetters | None = None) -> Bus:
        async def dead_letter(consumer: str, e: Event, error: str, tries: int) -> None:
            if dead is not None:
                dead.append((consumer, e["id"], tries))

        bus: Bus
        if url is None:
            bus = LocalBus(dead_letter=dead_letter, base_delay_s=0.001)
        else:
            nats_bus = NatsBus(url, dead_letter=dead_letter, max_deliver=3, prefix=prefix)
            await nats_bus.connect()
            bus = nats_bus
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def name() -> str:
    return f"c{uuid.uuid4().hex[:8]}"


async def test_each_consumer_group_sees_every_event_of_its_types(make_bus: Any) -> None:
    bus = await make_bus()
    fraud, notify = name(), name()
    seen: dict[str, list[str]] = {fraud: [], notify: []}

    def recorder(group: str) -> Any:
        async def handle(e: Event) -> None:
            seen[group].append(e["id"])

        return handle

    bus.subscribe(fraud, ["payment.created"], recorder(fraud))
    bus.subscribe(notify, ["payment.created", "refund.created"], recorder(notify))
    await bus.start()
    events = [event(), event("refund.created"), event("payment.fraud_assessed")]
    await bus.publish(events)
    await eventually(lambda: len(seen[notify]) >= 2 and len(seen[fraud]) >= 1)
    await asyncio.sleep(0.2)
    assert sorted(seen[fraud]) == [events[0]["id"]]
    assert sorted(seen[notify]) == sorted([events[0]["id"], events[1]["id"]])


async def test_a_failing_handler_is_retried_until_it_succeeds(make_bus: Any) -> None:
    bus = await make_bus()
    calls: list[str] = []

    async def flaky(e: Event) -> None:
        calls.append(e["id"])
        if len(calls) < 3:
            raise RuntimeError("database restarting")

    bus.subscribe(name(), ["payment.created"], flaky)
    await bus.start()
    e = event()
    await bus.publish([e])
    await eventually(lambda: len(calls) >= 3, seconds=20)
    assert set(calls) == {e["id"]}


async def test_an_always_failing_event_is_dead_lettered(make_bus: Any) -> None:
    dead: DeadLetters = []
    bus = await make_bus(dead)
    consumer = name()

    async def broken(_e: Event) -> None:
        raise ValueError("cannot apply")

    bus.subscribe(consumer, ["payment.created"], broken)
    await bus.start()
    e = event()
    await bus.publish([e])
    await eventually(lambda: bool(dead), seconds=30)
    assert dead[0][:2] == (consumer, e["id"])


async def test_events_that_arrive_together_reach_the_batch_handler_together(
    make_bus: Any,
) -> None:
    bus = await make_bus()
    batches: list[list[str]] = []
    alone: list[str] = []

    async def one(e: Event) -> None:
        alone.append(e["id"])

    async def many(events: list[Event]) -> None:
        batches.append([e["id"] for e in events])

    bus.subscribe(name(), ["payment.created"], one, batch=many)
    events = [event() for _ in range(5)]
    await bus.publish(events)  # before start: on NATS they wait in the stream, one fetch away
    await bus.start()
    seen = lambda: sorted([*alone, *(i for b in batches for i in b)])  # noqa: E731
    await eventually(lambda: len(seen()) >= 5)
    await asyncio.sleep(0.2)
    assert seen() == sorted(e["id"] for e in events)  # each once
    assert batches and max(len(b) for b in batches) > 1


async def test_a_failing_batch_is_delivered_one_by_one(make_bus: Any) -> None:
    dead: DeadLetters = []
    bus = await make_bus(dead)
    consumer = name()
    applied: list[str] = []
    events = [event() for _ in range(4)]
    poison = events[2]["id"]

    async def one(e: Event) -> None:
        if e["id"] == poison:
            raise ValueError("cannot apply")
        applied.append(e["id"])

    async def many(_events: list[Event]) -> None:
        raise RuntimeError("the batch's transaction failed")

    bus.subscribe(consumer, ["payment.created"], one, batch=many)
    await bus.publish(events)
    await bus.start()
    await eventually(lambda: bool(dead) and len(applied) >= 3, seconds=30)
    assert sorted(applied) == sorted(e["id"] for e in events if e["id"] != poison)
    assert dead[0][:2] == (consumer, poison)


@pytest.fixture
async def nats_buses(nats_url: str) -> AsyncIterator[Callable[[], Any]]:
    """NATS only: sharing work between processes and de-duplication are the broker's."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[NatsBus] = []

    async def factory() -> NatsBus:
        bus = NatsBus(nats_url, prefix=prefix)
        await bus.connect()
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()


@pytest.mark.nats
async def test_processes_of_one_group_share_the_work(nats_buses: Any) -> None:
    make_bus = nats_buses
    group = name()
    handled: list[tuple[int, str]] = []
    buses = [await make_bus() for _ in range(2)]
    for i, bus in enumerate(buses):

        async def handle(e: Event, i: int = i) -> None:
            handled.append((i, e["id"]))

        bus.subscribe(group, ["payment.created"], handle)
        await bus.start()
    events = [event() for _ in range(200)]
    await buses[0].publish(events)
    await eventually(lambda: len(handled) >= 200, seconds=20)
    await asyncio.sleep(0.3)
    ids = [h[1] for h in handled]
    assert sorted(ids) == sorted(e["id"] for e in events)  # each exactly once
    assert {h[0] for h in handled} == {0, 1}  # both processes took a share


@pytest.mark.nats
async def test_a_republished_event_is_dropped_within_the_window(nats_buses: Any) -> None:
    bus = await nats_buses()
    got: list[str] = []

    async def handle(e: Event) -> None:
        got.append(e["id"])

    bus.subscribe(name(), ["payment.created"], handle)
    await bus.start()
    e = event()
    await bus.publish([e])
    await bus.publish([e])  # the relay crashed before marking the row: it publishes again
    await eventually(lambda: bool(got))
    await asyncio.sleep(0.3)
    assert got == [e["id"]]


@pytest.mark.nats
async def test_a_watcher_hears_only_the_types_it_watches(nats_url: str) -> None:
    """NatsBus.watch: what an API process hears of the relays' events (the change feed): the
    objects of the types it asks for, and nothing of the others reaches it."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    publisher, watcher = NatsBus(nats_url, prefix=prefix), NatsBus(nats_url, prefix=prefix)
    await publisher.connect()
    await watcher.connect()
    try:
        await publisher.start()  # creates the streams the publishes go to
        heard: list[str] = []
        assert watcher._nc is not None
        before = watcher._nc.stats["in_msgs"]  # the connection's own requests' answers
        await watcher.watch(heard.append, types=["payment.succeeded", "refund.succeeded"])
        created, succeeded = event("payment.created"), event("payment.succeeded")
        created["data"]["object"]["id"], succeeded["data"]["object"]["id"] = "pay_a", "pay_b"
        refunded = event("refund.succeeded", payment="pay_b")
        await publisher.publish([created, succeeded, event("refund.created"), refunded])
        await eventually(lambda: len(heard) >= 2)
        await asyncio.sleep(0.2)  # time for a wrongly heard third
        assert sorted(heard) == ["pay_b", "pay_x"]
        # The others are not delivered at all: two messages came in since the watch began.
        assert watcher._nc.stats["in_msgs"] - before == 2
    finally:
        await publisher.close()
        await watcher.close()


@pytest.mark.nats
async def test_a_watch_hears_what_is_published_as_soon_as_it_returns(nats_url: str) -> None:
    """Once `watch` returns, the server has its subscriptions: an event published at once is
    heard. Twenty fresh watchers, each given one event the moment `watch` returns (about one in
    five was lost when `watch` returned with its subscriptions still queued in the client, one in
    twenty after a single flush)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    publisher = NatsBus(nats_url, prefix=prefix)
    await publisher.connect()
    try:
        await publisher.start()
        for round_ in range(20):
            watcher = NatsBus(nats_url, prefix=prefix)
            await watcher.connect()
            try:
                heard: list[str] = []
                await watcher.watch(heard.append, types=["payment.succeeded"])
                await publisher.publish([event("payment.succeeded")])
                await eventually(lambda heard=heard: bool(heard), seconds=2.0)
                assert heard == ["pay_x"], f"round {round_}"
            finally:
                await watcher.close()
    finally:
        await publisher.close()
