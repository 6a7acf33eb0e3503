"""The pipeline: the outbox relay, the bus and the consumers (screening, processor), and the
scheduler's recovery loop.

`paygate serve` runs every role in one process over the in-process bus; a scale-out process
(`paygate worker NAME`) runs one role over NATS JetStream. Either way the same classes do the
work: the choice is configuration, never a fork of the code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from paygate.connectors.base import BankConnector
from paygate.connectors.http import HttpBankConnector
from paygate.fraud.worker import FraudWorker
from paygate.ids import new_id, now_s
from paygate.notifications.worker import NotificationService
from paygate.platform import metrics
from paygate.platform.bus import Bus, LocalBus
from paygate.platform.db.tables import dead_letters
from paygate.platform.lease import run_leased
from paygate.platform.logging import log
from paygate.platform.relay import Relay
from paygate.platform.tasks import reraise_if_cancelling
from paygate.processor.recovery import Recovery
from paygate.processor.service import Processor
from paygate.reconciliation import service as reconciliation
from paygate.runtime import Runtime
from paygate.settlements import service as settlements

ROLES = ("relay", "fraud", "processor", "notifier", "scheduler")
SUMMARY_CHECK_S = 3600.0


class Pipeline:
    def __init__(
        self, rt: Runtime, bank: BankConnector, bus: Bus | None = None, roles: Iterable[str] = ROLES
    ) -> None:
        self.rt = rt
        self.bank = bank
        self.roles = frozenset(roles)
        self.bus = bus or LocalBus(dead_letter=self.dead_letter)
        # On the in-process bus every writer of events in this process wakes the relay after its
        # commit (`Runtime.changed`).
        self.relay = Relay(rt.db, self.bus, woken=isinstance(self.bus, LocalBus))
        self.processor = Processor(rt, bank)
        self.recovery = Recovery(self.processor)
        self.fraud: FraudWorker | None = None
        if "fraud" in self.roles:
            self.fraud = FraudWorker(rt)
            self.fraud.register(self.bus)
        if "processor" in self.roles:
            self.processor.register(self.bus)
        self.notifications: NotificationService | None = None
        if "notifier" in self.roles or "scheduler" in self.roles:
            self.notifications = NotificationService(rt)
        if "notifier" in self.roles and self.notifications is not None:
            self.notifications.register(self.bus)
        if "relay" in self.roles:
            rt.wake_relay = self.relay.wake
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def over_http(
        cls,
        rt: Runtime,
        bank_url: str,
        *,
        bus: Bus | None = None,
        roles: Iterable[str] = ROLES,
        **kwargs: Any,
    ) -> Pipeline:
        bank = HttpBankConnector(
            bank_url,
            rt.settings.bank_api_key,
            read_timeout=rt.settings.bank_read_timeout_s,
            **kwargs,
        )
        return cls(rt, bank, bus=bus, roles=roles)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.bus.start(), name="bus")]
        if "relay" in self.roles:
            self._tasks.append(asyncio.create_task(self.relay.run(), name="relay"))
        if "notifier" in self.roles and self.notifications is not None:
            self._tasks.append(asyncio.create_task(self.notifications.run(), name="notifier"))
        if "scheduler" in self.roles:
            self._tasks.append(asyncio.create_task(self._schedule(), name="scheduler"))

    async def _schedule(self) -> None:
        # Recovery, sweeps and daily jobs run in one process at a time, whichever holds the
        # lease; a holder that loses it (a database restart) stops them until it is back.
        await run_leased(
            self.rt.db, "scheduler", lambda: asyncio.gather(self.recovery.run(), self._daily())
        )

    async def _daily(self) -> None:
        """Yesterday's summaries to merchants (sending twice is harmless: deduplicated per
        merchant and day)."""
        while True:
            if self.notifications is not None:
                try:
                    yesterday = datetime.now(UTC).date() - timedelta(days=1)
                    await self.notifications.send_daily_summaries(yesterday)
                except Exception as exc:
                    reraise_if_cancelling(exc)
                    log.error("scheduler.daily_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await reconciliation.daily(self.rt)  # yesterday against the bank, once; never raises
            await settlements.daily(self.rt)  # yesterday's settlements, once; never raises
            await asyncio.sleep(SUMMARY_CHECK_S)

    async def stop(self) -> None:
        """Stop taking work, let work in flight finish (the bus acknowledges only what
        committed), then close."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.relay.wait_idle()
        if self.notifications is not None:
            await self.notifications.stop()
        await self.bus.close()
        await self.processor.wait_idle()
        if self.fraud is not None:
            await self.fraud.close()
        close = getattr(self.bank, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Run the relay until every event is published (and, in-process, applied)."""
        await self.relay.drain(timeout_s)

    async def dead_letter(
        self, consumer: str, event: dict[str, Any], error: str, tries: int
    ) -> None:
        """Keep an event a consumer could not apply, for inspection and replay."""
        async with self.rt.db.transaction() as conn:
            await conn.execute(
                dead_letters.insert(),
                dict(
                    id=new_id("dlq"),
                    consumer=consumer,
                    event_id=event["id"],
                    event_type=event["type"],
                    payload=event,
                    error=error,
                    attempts=tries,
                    created=now_s(),
                ),
            )
        metrics.BUS_DEAD_LETTERS.labels(consumer).inc()
