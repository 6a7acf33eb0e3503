"""The running simulator: its settings, store, rules and faults, shared by the routes."""

from __future__ import annotations

import time
from collections.abc import Callable

from paygate.banksim.faults import FaultInjector
from paygate.banksim.service import BankService
from paygate.banksim.settings import BankSimSettings, FaultConfig
from paygate.banksim.store import Store


class BankSim:
    """One simulated bank. `baseline` is the fault setting at start-up, which a `PUT` of the
    admin endpoint starts from."""

    def __init__(
        self, settings: BankSimSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock or time.time
        self.store = Store(settings.db_path)
        self.service = BankService(
            self.store, fingerprint_key=settings.fingerprint_secret(), clock=self.clock
        )
        self.baseline: FaultConfig = settings.faults()
        self.faults = FaultInjector(self.baseline, settings.seed)

    async def aclose(self) -> None:
        """Close the store. An app mounted inside another never sees its own lifespan, so the
        host app calls this on shutdown."""
        await self.store.close()
