"""What every process shares: settings, the database, the vault keyring, the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from paygate.config import Settings
from paygate.edge import cache as read_cache
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
    # Status reads served from `cache` (paygate.edge.cache): only where every process that
    # commits changes invalidates the same cache (see `read_cache_enabled`).
    read_cache: bool = False
    # Every worker's committed change wakes this process's waiters (`wait_change`), so a waiter
    # need not look again often: the embedded pipeline runs in this process and calls `changed`
    # itself; a scale-out API process hears the other processes' changes from the bus
    # (NatsBus.watch).
    hears_every_change: bool = False
    _waiters: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    # Background work of this process (cache invalidations, key bookkeeping): close() waits.
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        faults.arm(settings.fault_points)
        hmac_key = settings.hmac_key()
        return cls(
            settings=settings,
            db=Database(
                settings.resolved_database_url,
                pool_size=settings.db_pool_size,
                group_commit_max=settings.db_group_commit_max,
            ),
            keyring=Keyring(settings.vault_keyring(), fingerprint_key=hmac_key),
            hmac_key=hmac_key,
            cache=cache_from_url(settings.redis_url, settings.namespace),
            read_cache=read_cache_enabled(settings, embedded=False),
        )

    def changed(
        self, *object_ids: str, news: bool = True, versions: Mapping[str, int] | None = None
    ) -> None:
        """An object's state was committed: drop its cached reads, wake whoever waits on it
        (`Prefer: wait`) and wake the relay, which has events to publish. `news` false: the
        change leaves the objects on their way (a payment now `processing`), so no waiter is
        woken for it. `versions`: the objects' versions as committed, where the writer knows
        them (paygate.platform.db.written); the others are read back.

        With the read cache on, the waiters wake once the cached reads are dropped (in the
        background), so that a client answered by a waiter never reads an older state from the
        cache afterwards. A writer that answers a client itself awaits
        `paygate.edge.cache.invalidate` before answering."""
        woken = object_ids if news else ()
        cached = self.read_cache and any(read_cache.cacheable(i) for i in object_ids)
        dropped = cached and self.spawn(self._invalidate_then_wake(object_ids, woken, versions))
        if not dropped:
            self._wake(woken)
        self.wake_relay()

    async def _invalidate_then_wake(
        self,
        object_ids: tuple[str, ...],
        woken: tuple[str, ...],
        versions: Mapping[str, int] | None,
    ) -> None:
        try:
            await read_cache.invalidate(self, *object_ids, versions=versions)
        finally:
            self._wake(woken)

    def changed_elsewhere(self, object_id: str) -> None:
        """Another process committed a change of `object_id`: wake whoever waits on it."""
        self._wake((object_id,))

    def _wake(self, object_ids: tuple[str, ...]) -> None:
        for object_id in object_ids:
            for waiter in self._waiters.get(object_id, ()):
                waiter.set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` in the background of this process (close() lets it finish); False, and
        `work` is dropped, when no event loop runs here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            return False
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

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

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Let the background work of `spawn` finish; what is left after `timeout_s` is
        canceled."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        await self.drain()
        if self.bus is not None:
            await self.bus.close()
        await self.cache.close()
        await self.db.dispose()


def read_cache_enabled(settings: Settings, *, embedded: bool) -> bool:
    """`PAYGATE_READ_CACHE=auto` caches status reads where every writer invalidates the same
    cache: Redis, shared by all processes, or the one process of `paygate serve`. A memory cache
    in one of several processes would keep a state another process changed."""
    if settings.read_cache != "auto":
        return settings.read_cache == "on"
    return embedded or settings.redis_url is not None
