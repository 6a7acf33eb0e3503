"""Group commit for SQLite: many write transactions share one durable commit.

SQLite writes one transaction at a time and, with `synchronous=FULL`, every commit waits for the
disk (an fsync of the WAL: milliseconds, far more than the statements). Writers already queue on a
lock, so instead of each paying its own fsync, the writers that queue behind each other share one:

- The first writer of a *batch* opens a connection and `BEGIN IMMEDIATE`; each writer runs its
  block inside a SAVEPOINT of that transaction, so a block that raises rolls back its own
  statements only, and the others keep theirs. The savepoints are the driver's own statements,
  not SQLAlchemy's nested transactions (those cost about 240 us of CPU per writer, these 2 us);
  SQLAlchemy's savepoint events are still sent, so that their listeners (the counts made on
  commit, `metrics.on_commit`) drop what a failed writer left.
- When a block ends and nobody is waiting for the lock, or the batch is full or has been open
  for `MAX_BATCH_AGE_S`, that writer commits the batch. Otherwise it leaves the batch to those
  queued behind it, and makes sure a *flusher* is queued last, which commits whatever is left if
  the others went away.
- A writer a client waits for (the API's, `urgent`) takes its turn before the others queued,
  and its batch commits as its block ends unless another urgent writer waits: the pipeline's
  writers then start the next batch. None of them waits more than `MAX_BATCH_AGE_S` behind
  urgent ones. So a create call does not queue behind the pipeline's writes, nor wait for
  them to commit with it (docs/performance.md, "Urgent writers").
- Every writer returns from its block only once the batch that holds its work has committed: an
  acknowledged write is as durable as before. If the commit fails, every writer of the batch
  gets the error and nothing of the batch is written.

Under load the queue forms while a commit waits for the disk, so batches grow by themselves; alone,
a writer commits at once and waits for nobody. Constraints must be immediate (the gateway's are):
a deferred one is checked at COMMIT, where one writer's violation would fail the whole batch.
PostgreSQL needs none of this: concurrent
transactions there already share WAL flushes, and they do not serialize.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paygate.platform import metrics
from paygate.platform.db import sqlite_inline

# How long a batch may stay open while writers keep joining it. Without a bound, a queue that
# never empties (a saturated process) would hold every batch open until it is full, and its first
# writer would wait for all the others' blocks; with it, a writer waits at most this long for
# others (only when others are queued: alone, it commits at once).
MAX_BATCH_AGE_S = 0.05

SAVEPOINT = "paygate_writer"
UNIT = "paygate_unit"  # a savepoint inside a writer's block (`savepoint`)


class _Turns:
    """The writers' lock: urgent writers (a client waits for them) take their turn before the
    others, but none of those waits longer than `MAX_BATCH_AGE_S` behind urgent ones."""

    def __init__(self) -> None:
        self.held = False
        self.urgent: deque[asyncio.Future[None]] = deque()
        # (turn, queued at, a flusher's): a flusher queues like a writer, but is not one
        self.other: deque[tuple[asyncio.Future[None], float, bool]] = deque()

    @property
    def waiting(self) -> int:
        """Writers queued for the lock."""
        return len(self.urgent) + sum(not flusher for _, _, flusher in self.other)

    async def acquire(self, *, urgent: bool = False, flusher: bool = False) -> None:
        if not self.held and not self.urgent and not self.other:
            self.held = True
            return
        turn: asyncio.Future[None] = _loop().create_future()
        entry = (turn, _loop().time(), flusher)
        if urgent:
            self.urgent.append(turn)
        else:
            self.other.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the lock as it was cancelled: hand it on
            elif urgent and turn in self.urgent:
                self.urgent.remove(turn)
            elif entry in self.other:
                self.other.remove(entry)
            raise

    def release(self) -> None:
        while True:
            turn = self._next()
            if turn is None:
                self.held = False
                return
            if not turn.done():  # a cancelled waiter's turn is skipped
                turn.set_result(None)
                return

    def _next(self) -> asyncio.Future[None] | None:
        if self.other and (not self.urgent or _loop().time() - self.other[0][1] >= MAX_BATCH_AGE_S):
            return self.other.popleft()[0]
        if self.urgent:
            return self.urgent.popleft()
        return None


class BatchAborted(RuntimeError):
    """The batch holding this writer's work could not be committed: none of it was written."""


@dataclass(eq=False)
class _Batch:
    conn: AsyncConnection
    driver: Any  # the sqlite3 connection under `conn`, for the writers' savepoints
    sync: Connection  # SQLAlchemy's side of `conn`, whose savepoint events the writers send
    done: asyncio.Future[None] = field(default_factory=lambda: _loop().create_future())
    opened: float = field(default_factory=lambda: _loop().time())
    writers: int = 0
    urgent: bool = False  # holds an urgent writer's work
    flusher: asyncio.Task[None] | None = None

    def settle(self, error: BaseException | None = None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)
            self.done.exception()  # retrieved here: a batch nobody waits on logs nothing


class GroupCommit:
    """The write transactions of one SQLite database in this process."""

    def __init__(self, engine: AsyncEngine, *, max_writers: int = 64) -> None:
        self.engine = engine
        self.max_writers = max(1, max_writers)
        self._turns = _Turns()
        self._batch: _Batch | None = None

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction: ends when its batch has committed; rolls back alone if the
        block raises. `urgent`: a client waits for it (the API's writes)."""
        await self._turns.acquire(urgent=urgent)
        try:
            batch = self._batch or await self._open()
            _open_savepoint(batch.driver, batch.sync, SAVEPOINT)
        except BaseException:
            self._turns.release()
            raise
        batch.writers += 1
        batch.urgent = batch.urgent or urgent
        try:
            yield batch.conn
        except BaseException:
            await self._end_writer(batch, failed=True)
            raise
        await self._end_writer(batch, failed=False)
        # The batch commits in the writer who comes last (or the flusher): wait for it. Its
        # failure is always a BatchAborted (`settle`).
        await asyncio.shield(batch.done)

    async def _open(self) -> _Batch:
        conn = await self.engine.connect()
        try:
            conn = await conn.execution_options(**{sqlite_inline.BEGIN_OPTION: "BEGIN IMMEDIATE"})
            await conn.begin()
            driver = (await conn.get_raw_connection()).dbapi_connection
        except BaseException:
            await conn.close()
            raise
        assert conn.sync_connection is not None  # begun above
        self._batch = _Batch(conn, driver, conn.sync_connection)
        return self._batch

    async def _end_writer(self, batch: _Batch, *, failed: bool) -> None:
        """Close this writer's savepoint, then commit the batch or leave it to those queued; the
        lock is released in every case. Shielded: a cancelled writer still hands on the lock."""
        await asyncio.shield(asyncio.ensure_future(self._hand_on(batch, failed)))

    async def _hand_on(self, batch: _Batch, failed: bool) -> None:
        try:
            try:
                _close_savepoint(batch.driver, batch.sync, SAVEPOINT, failed=failed)
            except BaseException as exc:  # the connection is in doubt: give up the whole batch
                await self._abort(batch, exc)
                return
            if (
                not self._turns.waiting
                or (batch.urgent and not self._turns.urgent)
                or batch.writers >= self.max_writers
                or _loop().time() - batch.opened >= MAX_BATCH_AGE_S
            ):
                await self._commit(batch)
            elif batch.flusher is None:
                batch.flusher = asyncio.create_task(self._flush(batch))
        finally:
            self._turns.release()

    async def _flush(self, batch: _Batch) -> None:
        await self._turns.acquire(flusher=True)
        try:
            if self._batch is batch:
                await self._commit(batch)
        finally:
            self._turns.release()

    async def _commit(self, batch: _Batch) -> None:
        self._batch = None
        try:
            await batch.conn.commit()
        except BaseException as exc:
            batch.settle(BatchAborted(f"the group commit failed: {exc}"))
            await _discard(batch.conn)
            return
        metrics.GROUP_COMMIT_WRITERS.observe(batch.writers)
        batch.settle()  # committed: the writers go on, whatever becomes of the connection
        try:
            await batch.conn.close()
        except Exception:
            await _discard(batch.conn)

    async def _abort(self, batch: _Batch, exc: BaseException) -> None:
        self._batch = None
        await _discard(batch.conn)
        batch.settle(BatchAborted(f"a write of the batch left the connection in doubt: {exc}"))


@asynccontextmanager
async def savepoint(conn: AsyncConnection) -> AsyncIterator[None]:
    """A savepoint inside a writer's block, on the driver as the writers' own are (SQLAlchemy's
    `begin_nested` costs about 240 us of CPU): the block's statements roll back alone when it
    raises, and the error goes on. SQLAlchemy's savepoint events are sent, as for the writers."""
    sync = conn.sync_connection
    assert sync is not None  # a writer's connection, begun
    driver = sync.connection.dbapi_connection
    assert driver is not None
    _open_savepoint(driver, sync, UNIT)
    try:
        yield
    except BaseException:
        _close_savepoint(driver, sync, UNIT, failed=True)
        raise
    _close_savepoint(driver, sync, UNIT, failed=False)


def _open_savepoint(driver: Any, sync: Connection, name: str) -> None:
    driver.execute(f"SAVEPOINT {name}")
    sync.dispatch.savepoint(sync, name)


def _close_savepoint(driver: Any, sync: Connection, name: str, *, failed: bool) -> None:
    """Roll back to the savepoint (`failed`) or keep its work, then release it; SQLAlchemy's
    listeners hear which."""
    if failed:
        driver.execute(f"ROLLBACK TO {name}")
        sync.dispatch.rollback_savepoint(sync, name, None)
    else:
        sync.dispatch.release_savepoint(sync, name, None)
    driver.execute(f"RELEASE {name}")


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _discard(conn: AsyncConnection) -> None:
    """Drop a connection whose transaction failed: SQLite may keep a failed COMMIT's transaction
    open, so the connection must not go back to the pool as it is."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:  # noqa: S110 - a broken connection: the pool opens a new one
        pass
