"""The embedded default's SQLite driver: statements run on the event loop's thread; the two
operations that wait (taking the write lock, committing) run in a thread, so that the loop goes
on serving while they wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.util.concurrency import in_greenlet

from paygate.platform.db import Database
from paygate.platform.db.engine import IDLE_READERS


async def _database(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    async with db.transaction() as conn:
        await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
    return db


async def test_statements_run_on_the_loop_and_commits_in_a_thread(tmp_path: Path) -> None:
    db = await _database(tmp_path / "db.sqlite")
    seen: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    def trace(sql: str) -> None:
        seen.append((sql.split()[0].upper(), threading.get_ident() == loop_thread))

    @sa.event.listens_for(db.engine.sync_engine, "connect")
    def _traced(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    await db.engine.dispose()  # new connections, traced
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        async with db.read() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 1
    finally:
        await db.dispose()

    on_loop = {verb for verb, here in seen if here}
    elsewhere = {verb for verb, here in seen if not here}
    assert {"INSERT", "SELECT", "SAVEPOINT", "RELEASE"} <= on_loop
    assert {"BEGIN", "COMMIT"} <= elsewhere
    assert not {"INSERT", "SELECT"} & elsewhere


async def test_statements_run_straight_from_the_loop_and_what_may_wait_through_a_greenlet(
    tmp_path: Path,
) -> None:
    """A statement runs from the event loop itself, without the greenlet SQLAlchemy's async
    layer runs each call in; a text statement (which could take the write lock) still goes
    through one."""
    db = await _database(tmp_path / "db.sqlite")
    t = sa.table("t", sa.column("n"))
    seen: list[tuple[str, bool]] = []

    @sa.event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _where(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append((statement.split()[0].upper(), bool(in_greenlet())))

    try:
        async with db.transaction() as conn:
            await conn.execute(t.insert(), {"n": 1})
            await conn.execute(sa.text("INSERT INTO t VALUES (2)"))
        async with db.read() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(t)) == 2
    finally:
        await db.dispose()
    assert seen == [("INSERT", False), ("INSERT", True), ("SELECT", False)]


async def test_a_writer_waiting_for_the_lock_leaves_the_loop_serving(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock: the gateway's writer waits for it in a thread,
    while reads and every other coroutine go on; it writes once the lock is free."""
    path = tmp_path / "db.sqlite"
    db = await _database(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the write lock, held
    try:
        writer = asyncio.create_task(_insert(db, 2))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        async with db.read() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
        assert not writer.done()
        assert ticks == 20
        other.execute("COMMIT")
        await asyncio.wait_for(writer, 10)
        async with db.read() as conn:
            assert await conn.scalar(sa.text("SELECT n FROM t")) == 2
    finally:
        other.close()
        await db.dispose()


async def _insert(db: Database, n: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": n})


async def test_a_stream_reads_its_rows_as_they_are_fetched(tmp_path: Path) -> None:
    db = await _database(tmp_path / "db.sqlite")
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (:n)"), [{"n": n} for n in range(250)])
        async with db.read() as conn:
            result = await conn.stream(sa.text("SELECT n FROM t ORDER BY n"))
            got = [row.n async for row in result]
        assert got == list(range(250))
    finally:
        await db.dispose()


async def test_a_read_s_connection_serves_the_next_read_as_its_block_ends(
    tmp_path: Path,
) -> None:
    """Fifty readers at once, each yielding to the loop after its block: each block's connection
    is free as it ends, so one connection serves them all (closed in a task of their own, the
    blocks' connections were held a turn of the loop each, and the pool opened every connection
    it may). It is kept for the next read rather than given back to the pool."""
    db = await _database(tmp_path / "db.sqlite")
    opened = 0

    @sa.event.listens_for(db.engine.sync_engine, "connect")
    def _count(_dbapi_connection: Any, _record: Any) -> None:
        nonlocal opened
        opened += 1

    await db.engine.dispose()
    pool = db.engine.sync_engine.pool

    async def reader() -> None:
        for _ in range(5):
            async with db.read() as conn:
                assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
            assert pool.checkedout() <= 1  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(reader() for _ in range(50)))
        assert opened == 1
    finally:
        await db.dispose()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_kept_read_connection_sees_what_was_committed_since_its_last_block(
    tmp_path: Path,
) -> None:
    db = await _database(tmp_path / "db.sqlite")
    try:
        counts = []
        for n in range(3):
            async with db.read() as conn:
                counts.append(await conn.scalar(sa.text("SELECT count(*) FROM t")))
            await _insert(db, n)
        assert counts == [0, 1, 2]
    finally:
        await db.dispose()


async def test_a_connection_kept_after_a_stream_serves_the_next_read(tmp_path: Path) -> None:
    # A stream read to its end and one left half-read, each in a function that returns its
    # rows (as the routes do): the kept connection's next block reads afresh, and sees a row
    # written since. (A result kept past its block would hold its snapshot while it lives: no
    # result may outlive its block, whatever becomes of the connection.)
    db = await _database(tmp_path / "db.sqlite")

    async def first_rows(limit: int) -> list[int]:
        async with db.read(stream=True) as conn:
            result = await conn.stream(sa.text("SELECT n FROM t ORDER BY n"))
            return [row.n for row in await result.fetchmany(limit)]

    try:
        await _insert(db, 1)
        await _insert(db, 2)
        assert await first_rows(10) == [1, 2]
        assert await first_rows(1) == [1]
        await _insert(db, 3)
        async with db.read() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 3
        assert db.engine.sync_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_at_most_a_few_read_connections_are_kept(tmp_path: Path) -> None:
    """Ten reads at once hold ten connections; as they end, `IDLE_READERS` are kept and the rest
    go back to the pool."""
    db = await _database(tmp_path / "db.sqlite")
    pool = db.engine.sync_engine.pool
    inside, go = asyncio.Barrier(11), asyncio.Event()

    async def reader() -> None:
        async with db.read() as conn:
            await conn.scalar(sa.text("SELECT count(*) FROM t"))
            await inside.wait()
            await go.wait()

    try:
        readers = [asyncio.create_task(reader()) for _ in range(10)]
        await inside.wait()
        assert pool.checkedout() == 10  # type: ignore[attr-defined]
        go.set()
        await asyncio.gather(*readers)
        assert pool.checkedout() == IDLE_READERS  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_a_read_cancelled_or_failed_returns_its_connection(tmp_path: Path) -> None:
    db = await _database(tmp_path / "db.sqlite")
    pool = db.engine.sync_engine.pool
    started = asyncio.Event()

    async def waits_inside() -> None:
        async with db.read() as conn:
            await conn.scalar(sa.text("SELECT 1"))
            started.set()
            await asyncio.sleep(60)

    try:
        task = asyncio.create_task(waits_inside())
        await started.wait()
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert pool.checkedout() == 0  # type: ignore[attr-defined]

        with pytest.raises(sa.exc.OperationalError):
            async with db.read() as conn:
                await conn.execute(sa.text("SELECT * FROM no_such_table"))
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        async with db.read() as conn:  # the connections given back still serve
            assert await conn.scalar(sa.text("SELECT count(*) FROM t")) == 0
    finally:
        await db.dispose()
