"""Cached status reads (`GET /v1/payments/{id}`, `GET /v1/refunds/{id}`) and their invalidation.

An entry is the object's JSON exactly as the API renders it (at the first API version; newer
versions are rendered from it at the edge), bound to the merchant and mode that own it and kept
under the object's id, so that `invalidate(rt, *ids)` needs nothing but ids. Versions, for
`Cache.set_if_newer`:

- a filled entry is stored at 2·v, v being the row's `version` column when it was read;
- an invalidation stores an empty entry at 2·v - 1, v the version committed: as the writer
  recorded it (paygate.platform.db.written), else read from the database after the commit.

A reader that loaded the row before a commit (v - 1, stored at 2v - 2) can thus never put it back
over the invalidation, while the first reader after the commit (2v) replaces it: a read that
starts after a change's invalidation never answers the older state. Empty entries, misses and
entries of another merchant or mode read from the database.

Writers call `invalidate` after their commit and before they answer: the API's own write paths
await it; every `Runtime.changed(*ids)` (the processor, recovery, settlements) also schedules it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from paygate.platform.db.tables import payments, refunds
from paygate.platform.logging import log

if TYPE_CHECKING:
    from paygate.runtime import Runtime

_TABLES = {"pay_": payments, "re_": refunds}
# The versions of changed objects, by id prefix, built once (docs/performance.md).
_VERSIONS = {
    prefix: sa.select(table.c.id, table.c.version).where(
        table.c.id.in_(sa.bindparam("match_ids", expanding=True))
    )
    for prefix, table in _TABLES.items()
}


@dataclass
class ReadStats:
    """In-process counters of the read cache, for the metrics endpoint."""

    hits: int = 0
    misses: int = 0
    fills: int = 0
    refused_fills: int = 0  # a newer state (or its invalidation) was there first
    invalidations: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


STATS = ReadStats()


def cacheable(object_id: str) -> bool:
    return object_id.startswith(tuple(_TABLES))


def _key(object_id: str) -> str:
    return f"read:{object_id}"


def _owner(merchant_id: str, livemode: bool) -> bytes:
    return f"{merchant_id}:{'live' if livemode else 'test'}\n".encode()


async def lookup(
    rt: Runtime, merchant_id: str, livemode: bool, object_id: str
) -> tuple[int, bytes] | None:
    """(version, JSON) of a cached object of this merchant and mode, or None."""
    try:
        item = await rt.cache.get_versioned(_key(object_id))
    except (RedisError, OSError) as exc:
        _failed("read_cache.lookup_failed", exc)
        return None
    owner = _owner(merchant_id, livemode)
    if item is None or item[0] % 2 or not item[1].startswith(owner):
        STATS.misses += 1
        return None
    STATS.hits += 1
    return item[0] // 2, item[1][len(owner) :]


async def fill(
    rt: Runtime, merchant_id: str, livemode: bool, object_id: str, version: int, body: bytes
) -> bool:
    """Cache `body`, read at `version`, unless a newer state or invalidation is cached."""
    value = _owner(merchant_id, livemode) + body
    try:
        stored = await rt.cache.set_if_newer(
            _key(object_id), value, 2 * version, rt.settings.read_cache_ttl_s
        )
    except (RedisError, OSError) as exc:
        _failed("read_cache.fill_failed", exc)
        return False
    if stored:
        STATS.fills += 1
    else:
        STATS.refused_fills += 1
    return stored


async def invalidate(
    rt: Runtime, *object_ids: str, versions: Mapping[str, int] | None = None
) -> None:
    """Call after committing a change to these objects (payments, refunds; other ids are
    ignored), before answering: no read that starts after this returns sees the old state.
    `versions`: the versions the change committed, by id, where the writer knows them
    (paygate.platform.db.written); the others are read from the database."""
    ids = sorted({i for i in object_ids if cacheable(i)})
    if not ids or not rt.read_cache:
        return
    try:
        floors = {i: versions[i] for i in ids if versions and i in versions}
        unknown = [i for i in ids if i not in floors]
        if unknown:
            async with rt.db.read() as conn:
                for prefix, query in _VERSIONS.items():
                    wanted = [i for i in unknown if i.startswith(prefix)]
                    if wanted:
                        rows = await conn.execute(query, {"match_ids": wanted})
                        floors.update({row.id: row.version for row in rows})
        # A floor under each changed object's cached read, all in one round trip on Redis.
        await rt.cache.set_many_if_newer(
            [(_key(i), b"", 2 * floors[i] - 1) for i in ids if i in floors],
            rt.settings.read_cache_ttl_s,
        )
        await rt.cache.delete(*(_key(i) for i in ids if i not in floors))
        STATS.invalidations += len(ids)
    except (RedisError, OSError, SQLAlchemyError) as exc:
        # Nothing better can be done here: the entry expires after `read_cache_ttl_s`.
        _failed("read_cache.invalidation_failed", exc)


def _failed(event: str, exc: BaseException) -> None:
    STATS.errors += 1
    log.warning(event, error=type(exc).__name__)
