"""The event bus: the outbox relay publishes committed events; consumers apply them.

Delivery is at least once, and consumers are idempotent, so redelivery is harmless. On the
embedded default (`LocalBus`) `publish` returns only when every subscribed consumer has applied
the event (or dead-lettered it after its retries): the relay marks an outbox row sent only then,
so a crash at any point redelivers from the outbox on restart and loses nothing. A
scale-out bus implements the same protocol on a broker.

A consumer may also give a *batch handler*: the events of its subscription that arrive together
(a relay batch here, one fetch from the broker) are then applied in one call, one transaction,
instead of one each. If the batch handler raises, each event of the batch is delivered alone to
the plain handler, with its retries and dead letter, so one bad event holds up no other.

Every delivery runs in a consumer span whose parent is the trace context the event carries
(`tracing.CARRIER_KEY`, set by the relay), with the event's payment and merchant bound to its log
lines (paygate.platform.tracing). Here the relay's batch is the unit of delivery, so each event's
span is already linked to the batch through its parent, the relay's `publish` span.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from paygate.platform import tracing
from paygate.platform.logging import log

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]
DeadLetter = Callable[[str, Event, str, int], Awaitable[None]]


class Bus(Protocol):
    backend: str

    def subscribe(
        self,
        consumer: str,
        types: Iterable[str],
        handler: Handler,
        *,
        batch: BatchHandler | None = None,
    ) -> None: ...

    async def publish(self, events: list[Event]) -> None: ...

    async def ping(self) -> bool: ...

    async def start(self) -> None:
        """Begin consuming (after every `subscribe`)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Subscription:
    consumer: str
    types: frozenset[str]
    handler: Handler
    batch: BatchHandler | None = None


@dataclass
class LocalBus:
    """In-process delivery with bounded retries (exponential back-off with full jitter), then a
    dead letter."""

    dead_letter: DeadLetter | None = None
    attempts: int = 5
    base_delay_s: float = 0.05
    backend: str = "local"
    _subs: list[_Subscription] = field(default_factory=list)

    def subscribe(
        self,
        consumer: str,
        types: Iterable[str],
        handler: Handler,
        *,
        batch: BatchHandler | None = None,
    ) -> None:
        self._subs.append(_Subscription(consumer, frozenset(types), handler, batch))

    async def publish(self, events: list[Event]) -> None:
        deliveries = []
        for sub in self._subs:
            mine = [e for e in events if e["type"] in sub.types or "*" in sub.types]
            if sub.batch is not None and len(mine) > 1:
                deliveries.append(self._deliver_batch(sub, mine))
            else:
                deliveries += [self._deliver(sub, event) for event in mine]
        await asyncio.gather(*deliveries)

    async def ping(self) -> bool:
        return True

    async def start(self) -> None:
        return None  # delivery happens inside `publish`

    async def close(self) -> None:
        return None

    async def _deliver_batch(self, sub: _Subscription, events: list[Event]) -> None:
        assert sub.batch is not None
        carriers = [event.get(tracing.CARRIER_KEY) for event in events]
        if await apply_batch(sub.consumer, sub.batch, events, carriers, system="paygate"):
            return
        await asyncio.gather(*(self._deliver(sub, event) for event in events))

    async def _deliver(self, sub: _Subscription, event: Event) -> None:
        carrier = event.get(tracing.CARRIER_KEY)
        for attempt in range(1, self.attempts + 1):
            try:
                with tracing.consuming(
                    sub.consumer, event, carrier, system="paygate", attempt=attempt
                ):
                    await sub.handler(event)
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning(
                    "bus.delivery_failed",
                    consumer=sub.consumer,
                    event_id=event["id"],
                    event_type=event["type"],
                    attempt=attempt,
                    error=error,
                )
                if attempt == self.attempts:
                    if self.dead_letter is not None:
                        await self.dead_letter(sub.consumer, event, error, attempt)
                    return
                await asyncio.sleep(random.uniform(0, self.base_delay_s * 2**attempt))


async def apply_batch(
    consumer: str,
    batch: BatchHandler,
    events: list[Event],
    carriers: Sequence[Mapping[str, str] | None],
    *,
    system: str,
) -> bool:
    """Apply `events` in one call of the batch handler, each in a span of its own trace
    (`carriers`: each event's transport headers); False (logged) if it raised, and the caller
    then delivers them one by one."""
    span = tracing.start_batch(f"{consumer} batch", len(events), **{"messaging.system": system})
    try:
        with tracing.consuming_batch(consumer, events, carriers, system=system, batch=span):
            await batch(events)
        return True
    except Exception as exc:
        log.warning(
            "bus.batch_failed",
            consumer=consumer,
            events=len(events),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        return False
    finally:
        span.end()
