"""PostgreSQL connections: checked as they leave the pool (one the server closed, as a restart
cuts them all, is replaced without an error reaching the caller, and only one idle for a while
is pinged, where `pool_pre_ping` spent three round trips on every checkout); reads without a
transaction around them, and writes and streams with one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from paygate.platform.db import Database, engine
from tests.platform.conftest import cut_connections

pytestmark = pytest.mark.postgres


class _Watch:
    """Counts the pool's new connections and the pings, and can fail the next ping."""

    def __init__(self, db: Database) -> None:
        self.connects = self.pings = 0
        self.fail_next_ping = False
        sync = db.engine.sync_engine
        dialect = sync.dialect
        real_ping = dialect.do_ping

        def do_ping(dbapi_connection: Any) -> bool:
            self.pings += 1
            if self.fail_next_ping:
                self.fail_next_ping = False
                raise dialect.loaded_dbapi.InterfaceError("connection is closed")
            return real_ping(dbapi_connection)

        dialect.do_ping = do_ping  # type: ignore[method-assign]

        @sa.event.listens_for(sync, "connect")
        def _connected(_dbapi_connection: Any, _record: Any) -> None:
            self.connects += 1


async def _read(db: Database) -> None:
    async with db.read() as conn:
        assert await conn.scalar(sa.select(1)) == 1


async def _five_at_once(db: Database) -> None:
    async def hold() -> None:
        async with db.read() as conn:
            await conn.scalar(sa.select(1))
            await asyncio.sleep(0.1)

    await asyncio.gather(*(hold() for _ in range(5)))


async def test_connections_the_server_closed_are_replaced_unseen(own_pg_database: str) -> None:
    db = Database(own_pg_database)
    watch = _Watch(db)
    try:
        await _five_at_once(db)  # five connections in the pool
        assert watch.connects == 5
        assert await cut_connections(own_pg_database) == 5
        await asyncio.sleep(0.2)  # the driver hears each socket close
        for _ in range(10):
            await _read(db)
        async with db.transaction() as conn:
            assert await conn.scalar(sa.select(sa.func.txid_current())) is not None
        assert watch.connects >= 6
        assert watch.pings == 0  # a closed connection is known without a round trip
    finally:
        await db.dispose()


async def test_only_a_connection_idle_a_while_is_pinged(
    own_pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(own_pg_database)
    watch = _Watch(db)
    try:
        for _ in range(20):
            await _read(db)
        assert (watch.connects, watch.pings) == (1, 0)

        monkeypatch.setattr(engine, "PING_IDLE_S", 0.05)
        await asyncio.sleep(0.1)
        await _read(db)
        assert (watch.connects, watch.pings) == (1, 1)

        await asyncio.sleep(0.1)
        watch.fail_next_ping = True  # a connection the network dropped without a word
        await _read(db)
        assert (watch.connects, watch.pings) == (2, 2)
    finally:
        await db.dispose()


async def test_reads_run_outside_a_transaction_and_writes_inside_one(own_pg_database: str) -> None:
    """In a transaction, `now()` is the time it began; outside one, each statement's own. A
    read's connection, back in the pool, serves transactions again."""
    db = Database(own_pg_database, pool_size=1)  # one connection serves both
    now = sa.select(sa.func.now())

    async def two_nows(conn: Any) -> tuple[Any, Any]:
        first = await conn.scalar(now)
        await asyncio.sleep(0.01)
        return first, await conn.scalar(now)

    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("CREATE TABLE t (n integer)"))
        async with db.read() as conn:
            first, second = await two_nows(conn)
            assert second > first
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                first, second = await two_nows(conn)
                assert second == first
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("the write rolls back")
        async with db.read(stream=True) as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
            result = await conn.stream(sa.text("SELECT generate_series(1, 300)"))
            assert [n async for n in result.scalars()] == list(range(1, 301))
    finally:
        await db.dispose()
