"""API key look-up for every request, cached briefly in the process.

Keys are stored as HMAC hashes (paygate.merchants.keys); a request's key is looked up by its hash,
with its merchant's tier and API version, and kept `PAYGATE_KEY_CACHE_TTL_S` (1 s) in this
process: a revocation here takes effect at once (the entry is dropped), one made in another
process within that time. When an entry expires under load, the requests that find it gone
share one look-up rather than each making its own. `last_used_at` is written in the background
at most once a minute per key and process, never once per request, and the keys due meanwhile
are written together: one write transaction for all of them, not one per key (with many
merchants each sending now and then, nearly every request brings a key that is due).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from paygate.edge.principal import Principal
from paygate.edge.tiers import ADMIN
from paygate.errors import AuthenticationFailed
from paygate.ids import now_s
from paygate.merchants import keys
from paygate.platform.db.tables import api_keys, merchants
from paygate.platform.logging import log

if TYPE_CHECKING:
    from paygate.runtime import Runtime

TOUCH_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    merchant_id: str
    kind: str
    livemode: bool
    tier: str
    api_version: str
    permissions: tuple[tuple[str, str], ...]
    expires_at: int | None
    revoked_at: int | None


# Built once (docs/performance.md): matched by the key's hash.
_LOAD = (
    sa.select(api_keys, merchants.c.tier, merchants.c.api_version)
    .join(merchants, merchants.c.id == api_keys.c.merchant_id)
    .where(api_keys.c.key_hash == sa.bindparam("match_hash"))
)


async def load(conn: Any, key_hash: str) -> KeyRecord | None:
    row = (await conn.execute(_LOAD, {"match_hash": key_hash})).mappings().one_or_none()
    if row is None:
        return None
    return KeyRecord(
        id=row["id"],
        merchant_id=row["merchant_id"],
        kind=row["kind"],
        livemode=row["livemode"],
        tier=row["tier"],
        api_version=row["api_version"],
        permissions=tuple(sorted((row["permissions"] or {}).items())),
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


class KeyCache:
    def __init__(self, ttl_s: float, clock: Any = time.monotonic, max_items: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._max = max_items
        self._by_hash: dict[str, tuple[float, KeyRecord]] = {}
        self._touched: dict[str, float] = {}
        self._due: set[str] = set()  # keys whose last_used_at waits to be written
        self._writing = False
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    def get(self, key_hash: str) -> KeyRecord | None:
        item = self._by_hash.get(key_hash)
        if item is None or item[0] <= self.clock():
            return None
        return item[1]

    async def fetch(
        self, key_hash: str, load: Callable[[], Awaitable[KeyRecord | None]]
    ) -> KeyRecord | None:
        """The cached record, or `load()`'s, made once for all the requests that ask while it
        runs (each waits for it; a caller cancelled meanwhile does not cancel it)."""
        record = self.get(key_hash)
        if record is not None:
            return record
        pending = self._loading.get(key_hash)
        if pending is None:
            pending = self._loading[key_hash] = asyncio.ensure_future(self._load(key_hash, load))
        return await asyncio.shield(pending)

    async def _load(
        self, key_hash: str, load: Callable[[], Awaitable[KeyRecord | None]]
    ) -> KeyRecord | None:
        try:
            record = await load()
            if record is not None:
                self.put(key_hash, record)
            return record
        finally:
            del self._loading[key_hash]

    def put(self, key_hash: str, record: KeyRecord) -> None:
        if len(self._by_hash) >= self._max:
            self._by_hash.pop(next(iter(self._by_hash)))  # the oldest entry
        self._by_hash[key_hash] = (self.clock() + self.ttl_s, record)

    def forget(self, key_id: str) -> None:
        """Drop a key changed in this process (revoked, rolled): effective at once here."""
        for key_hash in [h for h, (_, r) in self._by_hash.items() if r.id == key_id]:
            del self._by_hash[key_hash]

    def due_touch(self, key_id: str) -> bool:
        now = self.clock()
        if now - self._touched.get(key_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return False
        if len(self._touched) >= self._max:
            self._touched.clear()
        self._touched[key_id] = now
        return True

    def touch(self, key_id: str) -> bool:
        """Note a use of the key; True when the caller must start the writer (none runs)."""
        if not self.due_touch(key_id):
            return False
        self._due.add(key_id)
        if self._writing:
            return False
        self._writing = True
        return True

    def take_due(self) -> list[str]:
        """The keys to write now; when none are left, the writer is done."""
        due, self._due = sorted(self._due), set()
        if not due:
            self._writing = False
        return due

    def writer_gone(self) -> None:
        """The writer could not run or stopped early: the next use starts another."""
        self._writing = False


async def resolve(rt: Runtime, cache: KeyCache, token: str) -> Principal:
    """The principal behind a bearer token, or `AuthenticationFailed`."""
    admin_key = rt.settings.admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal(kind="admin", key_id="admin", tier=ADMIN)
    if keys.parse(token) is None:
        raise AuthenticationFailed("Invalid API key provided.")
    key_hash = keys.key_hash(rt.hmac_key, token)

    async def look_up() -> KeyRecord | None:
        async with rt.db.read() as conn:
            return await load(conn, key_hash)

    record = await cache.fetch(key_hash, look_up)
    if record is None:
        raise AuthenticationFailed("Invalid API key provided.")
    if record.revoked_at is not None:
        raise AuthenticationFailed("Invalid API key provided.")
    if record.expires_at is not None and record.expires_at <= now_s():
        raise AuthenticationFailed(
            "This API key has expired; use the key that replaced it.", code="api_key_expired"
        )
    if cache.touch(record.id) and not rt.spawn(_write_touches(rt, cache)):
        cache.writer_gone()
    return Principal(
        kind=record.kind,
        merchant_id=record.merchant_id,
        livemode=record.livemode,
        key_id=record.id,
        tier=record.tier,
        api_version=record.api_version,
        permissions=record.permissions,
    )


async def _write_touches(rt: Runtime, cache: KeyCache) -> None:
    """Write `last_used_at` of every key due, in one transaction per round; the keys that come
    due while a round commits go in the next."""
    try:
        while due := cache.take_due():
            try:
                async with rt.db.transaction() as conn:
                    await conn.execute(
                        api_keys.update().where(api_keys.c.id.in_(due)).values(last_used_at=now_s())
                    )
            except (SQLAlchemyError, OSError) as exc:
                log.warning("api_key.touch_failed", keys=len(due), error=type(exc).__name__)
    finally:
        cache.writer_gone()
