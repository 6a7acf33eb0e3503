"""One database API over SQLite (embedded default) and PostgreSQL (scale-out).

On SQLite the driver is `sqlite_inline`: statements run on the event loop, and only the two
operations that wait (taking the write lock, committing) go to a thread.

Writes go through `Database.transaction()`: the unit of work. On SQLite one process writes at a
time anyway, so writers queue and share commits (`group_commit`: each writer's block runs in a
savepoint of a batch opened with `BEGIN IMMEDIATE`, since a deferred transaction that later
upgrades to a write can fail with SQLITE_BUSY under WAL); reads run beside them on their own
connections. WAL with `synchronous=FULL` makes every commit durable, and a writer returns only
once the commit holding its work is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from paygate.platform.db import group_commit, sqlite_inline
from paygate.platform.db.group_commit import GroupCommit

# SQLite: read connections kept open between reads, at most (the pool holds 5, and 10 more).
IDLE_READERS = 4


class Database:
    """The engine, the unit of work and the backend's name for `/readyz`."""

    def __init__(
        self, url: str, *, pool_size: int = 10, group_commit_max: int = 64, echo: bool = False
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.backend = "sqlite" if self.is_sqlite else "postgresql"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            ensure_sqlite_dir(url)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=0)
        engine_url = sqlite_inline.inline_url(url) if self.is_sqlite else url
        self.engine: AsyncEngine = create_async_engine(engine_url, **kwargs)
        if self.is_sqlite:  # statements straight from the event loop (`InlineConnection`)
            self.engine = sqlite_inline.InlineEngine(self.engine.sync_engine)
        self._writers: GroupCommit | None = None
        self._idle: list[AsyncConnection] = []  # SQLite's read connections kept between reads
        # PostgreSQL's reads run each statement on its own: READ COMMITTED gives each statement
        # a snapshot of its own even inside a transaction, and a transaction would only add a
        # BEGIN and a ROLLBACK, two round trips, to every read. The pool's connections go back
        # to transactions when they return.
        self._reader: AsyncEngine = self.engine
        if self.is_sqlite:
            _install_sqlite_pragmas(self.engine)
            self._writers = GroupCommit(self.engine, max_writers=group_commit_max)
        else:
            _check_on_checkout(self.engine)
            self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends (the block's exit waits for it),
        rolled back when the block raises. `urgent`: a client waits for it (SQLite's group
        commit gives it its turn first, and commits it sooner)."""
        if self._writers is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._writers.transaction(urgent=urgent) as conn:
            yield conn

    @asynccontextmanager
    async def single_write(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for one write statement that is a transaction of its own, committed
        (durably) as the statement ends. On PostgreSQL it runs with no BEGIN and COMMIT around
        it, two round trips fewer; on SQLite it is a write transaction of the group commit
        (`urgent` as for `transaction()`). Two statements in it would commit apart on
        PostgreSQL, and on-commit counts (paygate.platform.metrics) are never run there: use
        `transaction()` for those."""
        if self._writers is None:
            async with self._reader.connect() as conn:
                yield conn
            return
        async with self._writers.transaction(urgent=urgent) as conn:
            yield conn

    @asynccontextmanager
    async def savepoint(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """A savepoint in a write transaction's block (`conn`, from `transaction()`): when the
        inner block raises, its statements roll back alone and the error goes on. SQLAlchemy's
        savepoint listeners hear of it (paygate.platform.metrics keeps or drops its counts)."""
        if self._writers is None:
            async with _pg_savepoint(conn):
                yield
            return
        async with group_commit.savepoint(conn):
            yield

    @asynccontextmanager
    async def read(self, *, stream: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only connection (a snapshot per statement on PostgreSQL, per transaction on
        SQLite). `stream`: the block streams rows (`conn.stream`), which on PostgreSQL needs a
        transaction to hold its cursor."""
        if not self.is_sqlite:
            async with (self.engine if stream else self._reader).connect() as conn:
                yield conn
            return
        # A read connection is kept for the next read: ending its transaction (a rollback)
        # never waits on this driver, where giving it back to the pool and taking it out again
        # cost about 100 µs through SQLAlchemy's async layer, 7 times a payment
        # (docs/performance.md). A block that raised closes its connection instead. Closed
        # directly, not by `async with`, which closes in a task of its own: the block's exit
        # would hold the connection a turn of the loop. No result may outlive its block: a
        # half-read one keeps its statement, and with it the snapshot, while it lives (as it
        # did on a connection back in the pool).
        conn = self._idle.pop() if self._idle else await self.engine.connect().start()
        try:
            yield conn
        except BaseException:
            await conn.close()
            raise
        sync = conn.sync_connection
        if sync is None or conn.invalidated or len(self._idle) >= IDLE_READERS:
            await conn.close()
            return
        try:
            sync.rollback()
        except BaseException:
            await conn.close()
            raise
        self._idle.append(conn)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        while self._idle:
            await self._idle.pop().close()
        await self.engine.dispose()


_DEPTH = "paygate_savepoint_depth"


@asynccontextmanager
async def _pg_savepoint(conn: AsyncConnection) -> AsyncIterator[None]:
    """SAVEPOINT as a plain statement, none of SQLAlchemy's nested-transaction work, and no
    RELEASE after a block that succeeds: the COMMIT releases it, and RELEASE would be a round
    trip more. (Through SQLAlchemy all the same, so that a lost connection is reported as its
    errors are, a 503 and not a 500.) Named by depth, so that a block inside another rolls back
    to its own; a second block after the first reuses the name, and PostgreSQL rolls back to
    the newest savepoint of that name."""
    sync = conn.sync_connection
    assert sync is not None  # a transaction's connection, begun
    depth = sync.info.get(_DEPTH, 0) + 1
    name = f"unit_{depth}"
    await conn.exec_driver_sql(f"SAVEPOINT {name}")
    sync.info[_DEPTH] = depth
    sync.dispatch.savepoint(sync, name)
    try:
        yield
    except BaseException:
        try:
            await conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        except Exception:
            if not sync.invalidated:
                raise
            # The connection was lost in the block, and its transaction with it: nothing of
            # the block can be committed. The block's own error says what happened (a lost
            # connection, a 503), not the refused rollback on a connection that is gone.
        else:
            sync.dispatch.rollback_savepoint(sync, name, None)
        raise
    else:
        sync.dispatch.release_savepoint(sync, name, None)  # its work is kept
    finally:
        if not sync.invalidated:  # a lost connection's info is cleared as it is replaced
            sync.info[_DEPTH] = depth - 1


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite database file."""
    if not url.startswith("sqlite"):
        return
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    # The driver's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one
    # that runs (and savepoints work): the recipe in SQLAlchemy's SQLite dialect documentation.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # Straight to the driver: a BEGIN needs none of SQLAlchemy's statement handling, which costs
    # as much as the read that follows it.
    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        sql = conn.get_execution_options().get(sqlite_inline.BEGIN_OPTION, "BEGIN")
        sqlite_inline.begin(conn.connection.dbapi_connection, sql)


# A pooled PostgreSQL connection idle for longer than this is pinged before it is used.
PING_IDLE_S = 5.0
_RETURNED = "paygate_returned_at"


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Check each PostgreSQL connection as it leaves the pool, where `pool_pre_ping` would ping
    it: three round trips through SQLAlchemy's asyncpg adapter (a transaction begun, `;`, rolled
    back) on every checkout, 9 % of an API process's CPU under load (docs/performance.md).

    A connection the server closed (a restart or a crash cuts them all; asyncpg has seen its
    socket close) is known without a round trip and replaced, and so is one idle for longer
    than `PING_IDLE_S` whose ping fails (the network may have dropped it without a word): the
    pool then also replaces every connection opened before it. A connection in use when the
    server goes fails its statement, as it did with the ping: the API answers 503."""
    sync = engine.sync_engine

    @event.listens_for(sync, "connect")
    @event.listens_for(sync, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if proxy.driver_connection.is_closed():
            raise sa.exc.DisconnectionError("the server closed the connection")
        if time.monotonic() - record.info.get(_RETURNED, 0.0) > PING_IDLE_S:
            try:
                sync.dialect.do_ping(dbapi_connection)
            except sync.dialect.loaded_dbapi.Error as exc:
                raise sa.exc.InvalidatePoolError(f"ping failed: {exc}") from exc
