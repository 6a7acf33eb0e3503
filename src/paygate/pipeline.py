"""The embedded pipeline: the outbox relay, the in-process bus and every consumer, running as
tasks beside the API in one process (`paygate serve`)."""

from __future__ import annotations

import asyncio
from typing import Any

from paygate.connectors.base import BankConnector
from paygate.connectors.http import HttpBankConnector
from paygate.fraud.worker import FraudWorker
from paygate.ids import new_id, now_s
from paygate.platform.bus import Bus, LocalBus
from paygate.platform.db.tables import dead_letters
from paygate.platform.relay import Relay
from paygate.processor.recovery import Recovery
from paygate.processor.service import Processor
from paygate.runtime import Runtime


class Pipeline:
    def __init__(self, rt: Runtime, bank: BankConnector, bus: Bus | None = None) -> None:
        self.rt = rt
        self.bank = bank
        self.bus = bus or LocalBus(dead_letter=self._dead_letter)
        self.relay = Relay(rt.db, self.bus)
        self.processor = Processor(rt, bank)
        self.recovery = Recovery(self.processor)
        FraudWorker(rt).register(self.bus)
        self.processor.register(self.bus)
        rt.wake_relay = self.relay.wake
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def over_http(cls, rt: Runtime, bank_url: str, **kwargs: Any) -> Pipeline:
        bank = HttpBankConnector(
            bank_url,
            rt.settings.bank_api_key,
            read_timeout=rt.settings.bank_read_timeout_s,
            **kwargs,
        )
        return cls(rt, bank)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="relay"),
            asyncio.create_task(self.recovery.run(), name="recovery"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        close = getattr(self.bank, "aclose", None)
        if close is not None:
            await close()

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Run the relay until every event is published and applied (tests, shutdown)."""
        await self.relay.drain(timeout_s)

    async def _dead_letter(
        self, consumer: str, event: dict[str, Any], error: str, tries: int
    ) -> None:
        async with self.rt.db.transaction() as conn:
            await conn.execute(
                dead_letters.insert().values(
                    id=new_id("dlq"),
                    consumer=consumer,
                    event_id=event["id"],
                    event_type=event["type"],
                    payload=event,
                    error=error,
                    attempts=tries,
                    created=now_s(),
                )
            )
