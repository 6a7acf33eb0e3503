"""Consumer lag on NATS JetStream (a real server): each durable consumer's undelivered and
unacknowledged messages, as a scrape reports them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from paygate.platform.bus import Event
from paygate.platform.exposition import bus_families
from paygate.platform.nats_bus import NatsBus, stream_of
from tests.metrics.support import Samples


def samples(families: list[Any]) -> Samples:
    values = {}
    for family in families:
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return Samples(values)


def event(n: int) -> Event:
    return {
        "id": f"evt_lag{n}_{uuid.uuid4().hex[:8]}",
        "object": "event",
        "type": "payment.created",
        "created": int(time.time()),
        "sequence": 1,
        "livemode": False,
        "data": {"object": {"id": f"pay_lag{n}"}},
    }


async def test_pending_and_unacknowledged_per_consumer(nats_url: str) -> None:
    prefix = f"m{uuid.uuid4().hex[:10]}"
    bus = NatsBus(nats_url, prefix=prefix, batch=2)
    release = asyncio.Event()
    applied: list[str] = []

    async def slow(e: Event) -> None:
        await release.wait()
        applied.append(e["id"])

    await bus.connect()
    try:
        bus.subscribe("fraud", ["payment.created"], slow)
        # Published first, so that the consumer's first fetch finds a full batch waiting.
        await bus.publish([event(n) for n in range(5)])
        await bus.start()
        stream = stream_of("payment", prefix)
        # Two fetched and held by the slow handler, three not yet delivered.
        deadline = time.monotonic() + 10
        while True:
            lag = samples(await bus_families(bus, None))
            held = lag.get("paygate_bus_consumer_ack_pending_messages", consumer="fraud")
            if held == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert held == 2
        pending = "paygate_bus_consumer_pending_messages"
        assert lag.get(pending, stream=stream, consumer="fraud") == 3
        release.set()
        deadline = time.monotonic() + 10
        while len(applied) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the last acknowledgement reaches the server
        lag = samples(await bus_families(bus, None))
        assert lag.get(pending, consumer="fraud") == 0
        assert lag.get("paygate_bus_consumer_ack_pending_messages", consumer="fraud") == 0
    finally:
        release.set()
        await bus.close()
