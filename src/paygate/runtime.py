"""What every process shares: settings, the database, the vault keyring, the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from paygate.config import Settings
from paygate.platform import faults
from paygate.platform.bus import Bus
from paygate.platform.cache import Cache, cache_from_url
from paygate.platform.db import Database
from paygate.vault.crypto import Keyring


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    hmac_key: bytes
    cache: Cache
    # The broker connection of a scale-out process (None on the embedded default, whose bus
    # lives in its pipeline).
    bus: Bus | None = None
    # Idempotency keys whose first request is executing in this process (see api/idempotency).
    inflight: set[tuple[str, str, str]] = field(default_factory=set)
    # Called after a commit that wrote outbox events (the embedded relay polls less when woken).
    wake_relay: Callable[[], None] = lambda: None
    _waiters: dict[str, set[asyncio.Event]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        faults.arm(settings.fault_points)
        hmac_key = settings.hmac_key()
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url, pool_size=settings.db_pool_size),
            keyring=Keyring(settings.vault_keyring(), fingerprint_key=hmac_key),
            hmac_key=hmac_key,
            cache=cache_from_url(settings.redis_url),
        )

    def changed(self, *object_ids: str) -> None:
        """An object's state was committed: wake whoever waits on it (`Prefer: wait`) and the
        relay, which has events to publish."""
        for object_id in object_ids:
            for waiter in self._waiters.get(object_id, ()):
                waiter.set()
        self.wake_relay()

    async def wait_change(self, object_id: str, seconds: float) -> None:
        """Return when `object_id` changes in this process, or after `seconds` (changes made by
        other processes are seen by the caller's next read)."""
        waiter = asyncio.Event()
        self._waiters.setdefault(object_id, set()).add(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter.wait()
        except TimeoutError:
            pass  # the caller reads the state again either way
        finally:
            waiters = self._waiters.get(object_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[object_id]

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()
        await self.cache.close()
        await self.db.dispose()
