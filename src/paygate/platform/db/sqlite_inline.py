"""The embedded default's SQLite driver: statements run on the event loop, waits in a thread.

aiosqlite gives every connection a thread and hands it each call, so one statement costs two
thread switches and a wake-up of the event loop: a read by primary key through SQLAlchemy's
async layer cost about 0.75 ms of CPU on this project's benchmark machine, and about 0.15 ms
with this driver (docs/performance.md). A statement on SQLite in WAL mode is work, not
waiting: a read never waits for a writer, and a write inside a transaction only touches pages
in memory. The waiting is in two places only: taking the write lock (`BEGIN IMMEDIATE`, which
waits while another process writes) and `COMMIT` (an fsync). So this dialect runs every
statement inline on the loop, through `sqlite3`, and sends just those two to a thread
(`asyncio.to_thread`), where the loop goes on serving while the disk works.

It is the pysqlite dialect marked async, so that `create_async_engine` and every
`AsyncConnection` in the code base use it unchanged. Inside SQLAlchemy's async layer each
statement passes through an awaitable that completes at once, as the layer expects of its
drivers; but since none waits, `InlineConnection.execute` skips the layer and calls the sync
connection from the event loop itself. `Database` selects the dialect for every `sqlite` URL
(`inline_url`) and wraps its engine in `InlineEngine`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.base import SQLiteExecutionContext
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

DRIVER = "paygate_inline"


async def _now(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _run(fn: Any, *args: Any) -> Any:
    """Call a driver method inline. Inside SQLAlchemy's async layer (a greenlet of its own),
    through an awaitable that completes at once, since the layer checks that each statement
    awaited one; called straight from the event loop (`InlineConnection.execute`), directly."""
    if in_greenlet():
        return await_only(_now(fn, *args))
    return fn(*args)


def _waits(statement: str) -> bool:
    return statement.lstrip()[:15].upper().startswith(("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"))


class _Cursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """SQLAlchemy's async layer lets an async driver close a cursor early and keep its rows;
        a sqlite3 cursor keeps them without that."""


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


class _ExecutionContext(SQLiteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        # A sqlite3 cursor steps through its rows as they are fetched: it streams already.
        return self._dbapi_connection.cursor()


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    driver = DRIVER
    is_async = True
    supports_statement_cache = True
    supports_server_side_cursors = True
    execution_ctx_cls = _ExecutionContext

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        if cls._is_url_file_db(url):
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = super().create_connect_args(url)
        kwargs["check_same_thread"] = False  # COMMIT runs in a worker thread
        kwargs["factory"] = _Connection
        return args, kwargs

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        if _waits(statement):
            await_only(asyncio.to_thread(cursor.execute, statement, parameters))
        else:
            _run(cursor.execute, statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        if _waits(statement):
            await_only(asyncio.to_thread(cursor.execute, statement))
        else:
            _run(cursor.execute, statement)

    def do_executemany(
        self, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> None:
        _run(cursor.executemany, statement, parameters)

    def do_commit(self, dbapi_connection: Any) -> None:
        await_only(asyncio.to_thread(dbapi_connection.commit))


def begin(dbapi_connection: Any, statement: str) -> None:
    """Open a transaction on a connection of this driver (from SQLAlchemy's sync side)."""
    if _waits(statement):
        await_only(asyncio.to_thread(dbapi_connection.execute, statement))
    else:
        dbapi_connection.execute(statement)


registry.register(f"sqlite.{DRIVER}", __name__, "InlineSQLiteDialect")

# The execution option naming a connection's BEGIN (engine.py's `begin` listener runs it).
BEGIN_OPTION = "paygate_begin"


class InlineConnection(AsyncConnection):
    """An `AsyncConnection` whose statements run straight from the event loop.

    SQLAlchemy's async layer runs each statement in a greenlet of its own, and this driver's
    statements never wait: a statement cost about 30 µs of CPU more than through a sync
    connection, 40 statements a payment (docs/performance.md). So `execute` (and `scalar`,
    `scalars`, which call it) calls the sync connection directly, and returns the same result.
    What may wait still goes through the async layer: a statement that opens a transaction
    with `BEGIN IMMEDIATE`, and a text statement (which could be one); so do commits, streams
    and everything else."""

    async def execute(  # type: ignore[override]
        self,
        statement: sa.Executable,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> CursorResult[Any]:
        sync = self.sync_connection
        if (
            sync is None
            or execution_options
            or isinstance(statement, sa.TextClause)
            or (
                not sync.in_transaction()
                and _waits(sync.get_execution_options().get(BEGIN_OPTION, "BEGIN"))
            )
        ):
            return await super().execute(statement, parameters, execution_options=execution_options)
        return sync.execute(statement, parameters)


class _Insert(NamedTuple):
    sql: str
    columns: tuple[str, ...]  # in the order of the statement's parameters
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (where, what) of typed values


_inserts: dict[tuple[sa.Table, frozenset[str]], _Insert] = {}


def insert_rows(
    conn: AsyncConnection,
    table: sa.Table,
    columns: frozenset[str],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Insert `rows` (each with the keys `columns`, in a transaction begun on `conn`) with one
    `executemany` of the driver: the statement SQLAlchemy compiles for them, each value through
    its column type's bind processor, `before_cursor_execute` and `after_cursor_execute` sent,
    a driver error raised as SQLAlchemy's. What SQLAlchemy's execution adds around it (an
    execution context, the compiled cache's look-up, parameters built and processed through
    dictionaries) cost about 60 µs an insert, and a payment's deferred blocks send about 16
    (deferred.py, docs/performance.md). Only for plain rows: no column default is filled in,
    nothing is returned."""
    sync = conn.sync_connection
    assert sync is not None and sync.in_transaction()
    plan = _inserts.get((table, columns))
    if plan is None:
        plan = _inserts[table, columns] = _compile_insert(table, columns, sync.dialect)
    params = []
    for row in rows:
        values = [row[c] for c in plan.columns]
        for i, process in plan.processors:
            values[i] = process(values[i])
        params.append(tuple(values))
    driver = sync.connection.dbapi_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        sync.dispatch.before_cursor_execute(sync, cursor, plan.sql, params, None, True)
        cursor.executemany(plan.sql, params)
        sync.dispatch.after_cursor_execute(sync, cursor, plan.sql, params, None, True)
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(
            plan.sql, params, exc, sqlite3.Error, dialect=sync.dialect
        ) from exc
    finally:
        cursor.close()


def _compile_insert(table: sa.Table, columns: frozenset[str], dialect: Any) -> _Insert:
    names = [c.name for c in table.c if c.name in columns]
    if len(names) != len(columns):
        raise KeyError(f"not columns of {table.name}: {sorted(columns - set(names))}")
    stmt = table.insert().values({n: sa.bindparam(n, type_=table.c[n].type) for n in names})
    compiled = stmt.compile(dialect=dialect)
    order = tuple(compiled.positiontup or ())
    assert sorted(order) == sorted(names), (order, names)
    processors = [(i, table.c[n].type.bind_processor(dialect)) for i, n in enumerate(order)]
    return _Insert(compiled.string, order, tuple((i, p) for i, p in processors if p is not None))


class InlineEngine(AsyncEngine):
    """The async engine of this driver: its connections are `InlineConnection`s."""

    _connection_cls = InlineConnection


def inline_url(url: str) -> str:
    """The same SQLite database, through this driver."""
    parsed = make_url(url)
    return parsed.set(drivername=f"sqlite+{DRIVER}").render_as_string(hide_password=False)
