"""The event bus: the outbox relay publishes committed events; consumers apply them.

Delivery is at least once, and consumers are idempotent, so redelivery is harmless. On the
embedded default (`LocalBus`) `publish` returns only when every subscribed consumer has applied
the event (or dead-lettered it after its retries): the relay marks an outbox row sent only then,
so a crash at any point redelivers from the outbox on restart and loses nothing. A
scale-out bus implements the same protocol on a broker.

Every delivery runs in a consumer span whose parent is the trace context the event carries
(`tracing.CARRIER_KEY`, set by the relay), with the event's payment and merchant bound to its log
lines (paygate.platform.tracing). Here the relay's batch is the unit of delivery, so each event's
span is already linked to the batch through its parent, the relay's `publish` span.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from paygate.platform import tracing
from paygate.platform.logging import log

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None]]
DeadLetter = Callable[[str, Event, str, int], Awaitable[None]]


class Bus(Protocol):
    backend: str

    def subscribe(self, consumer: str, types: Iterable[str], handler: Handler) -> None: ...

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


@dataclass
class LocalBus:
    """In-process delivery with bounded retries (exponential back-off with full jitter), then a
    dead letter."""

    dead_letter: DeadLetter | None = None
    attempts: int = 5
    base_delay_s: float = 0.05
    backend: str = "local"
    _subs: list[_Subscription] = field(default_factory=list)

    def subscribe(self, consumer: str, types: Iterable[str], handler: Handler) -> None:
        self._subs.append(_Subscription(consumer, frozenset(types), handler))

    async def publish(self, events: list[Event]) -> None:
        deliveries = [
            self._deliver(sub, event)
            for event in events
            for sub in self._subs
            if event["type"] in sub.types or "*" in sub.types
        ]
        await asyncio.gather(*deliveries)

    async def ping(self) -> bool:
        return True

    async def start(self) -> None:
        return None  # delivery happens inside `publish`

    async def close(self) -> None:
        return None

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
