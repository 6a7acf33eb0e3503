"""Inserts (and deletes) of a transaction that covers many payments, sent together at the end of
its block.

A consumer that applies a batch (the processor's decisions and answers, the fraud worker's
assessments) writes, per payment, rows that nothing in the same transaction reads back: the
transaction log, outbox events, ledger entries and postings, balance transactions. Inside
`deferred(conn)`, `insert(conn, table, rows)` keeps them, and the block's end sends each table's
rows as one multi-row insert, in the order the tables were first written (a posting's entry goes
before it), still inside the transaction: they commit with everything else, or not at all. A
block that raises sends nothing. Outside such a block, `insert` executes at once.

On PostgreSQL the block's end sends every table's rows as one statement, whatever their number:
each table's insert selects its rows from one array per column (`unnest`), a data-modifying
`WITH` of the last. One round trip where there were as many as tables; its shape, and so its
compiled and prepared form, depends only on the tables and columns written, never on how many
rows, so a batch of any size reuses it. When every table has one row (an API write, a batch of
one payment), the same statement takes plain values instead of arrays, which cost more to send
(a second form, also built once). A foreign key between them is checked at the statement's end,
when every row is in.

`delete(conn, table, column, key)` keeps a key the same way: the block's end deletes every
row of that table whose column holds one of its keys, on PostgreSQL as a `WITH` of the same
statement (`DELETE … WHERE column = ANY(:keys)`), on SQLite before the inserts. Either way a
deferred delete sees what the transaction held before the block's end, never the block's own
inserts.

Only rows that the rest of the transaction does not read may be deferred; a constraint that one
of them breaks is then reported at the block's end, for the whole batch (whose caller applies
each payment alone after a failed batch).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeDecorator

from paygate.platform.db import sqlite_inline

# Rows waiting, by connection, then by table and column set (each multi-row insert names one set
# of columns), in the order first written; and the keys of the rows to delete, by table and
# column.
_Rows = dict[tuple[sa.Table, frozenset[str]], list[Mapping[str, Any]]]
_Deletes = dict[tuple[sa.Table, str], list[Any]]


@dataclass
class _Block:
    rows: _Rows = field(default_factory=dict)
    deletes: _Deletes = field(default_factory=dict)


_waiting: WeakKeyDictionary[AsyncConnection, _Block] = WeakKeyDictionary()


@asynccontextmanager
async def deferred(conn: AsyncConnection) -> AsyncIterator[None]:
    """Keep `insert`'s rows and `delete`'s keys on `conn` until the block ends, then send them.
    Inside another block, the outer one sends them; if this one raises, what it added is
    dropped (as a savepoint around it rolls back the statements it sent)."""
    outer = _waiting.get(conn)
    if outer is not None:
        marks = _marks(outer.rows), _marks(outer.deletes)
        try:
            yield
        except BaseException:
            _drop_since(outer.rows, marks[0])
            _drop_since(outer.deletes, marks[1])
            raise
        return
    block = _Block()
    _waiting[conn] = block
    try:
        yield
        await _send(conn, block)
    finally:
        del _waiting[conn]


def _marks(waiting: Mapping[Any, list[Any]]) -> dict[Any, int]:
    return {key: len(items) for key, items in waiting.items()}


def _drop_since(waiting: dict[Any, list[Any]], marks: dict[Any, int]) -> None:
    """Drop what was added to `waiting` since `marks` were taken."""
    for key in list(waiting):
        if key in marks:
            del waiting[key][marks[key] :]
        else:
            del waiting[key]


async def _send(conn: AsyncConnection, block: _Block) -> None:
    waiting, deletes = block.rows, block.deletes
    if not waiting and not deletes:
        return
    if conn.dialect.name != "postgresql":  # SQLite: a call into the library each, no round trip
        # The deletes first: on PostgreSQL they see what the transaction held before the
        # block's end, never the block's own rows, and so they do here.
        for (table, column), matched in deletes.items():
            await conn.execute(_delete_in(table, column), {"match_keys": matched})
        straight = isinstance(conn, sqlite_inline.InlineConnection) and not conn.sync_engine.echo
        for (table, keys), rows in waiting.items():
            if straight:  # to the driver, past SQLAlchemy's execution (`insert_rows`)
                sqlite_inline.insert_rows(conn, table, keys, rows)
            else:
                await conn.execute(_plain(table), rows)
        return
    shape = tuple((table, tuple(sorted(columns))) for table, columns in waiting)
    # A row a table (an API write, a batch of one payment): plain values, no arrays.
    single = all(len(rows) == 1 for rows in waiting.values())
    key = (single, tuple(deletes), shape)
    built = _together.get(key)
    if built is None:
        built = _together[key] = _build(*key, conn.dialect)
    statement, encoders = built
    params: dict[str, Any] = {f"d{i}": matched for i, matched in enumerate(deletes.values())}
    for i, ((_, columns), rows) in enumerate(zip(shape, waiting.values(), strict=True)):
        for column in columns:
            name = f"w{i}_{column}"
            if single:
                params[name] = rows[0][column]
                continue
            encode = encoders.get(name)
            column_values = [row[column] for row in rows]
            params[name] = [encode(v) for v in column_values] if encode else column_values
    await conn.execute(statement, params)


# The one-statement writes by shape (whether every table has one row, the deletes' tables and
# columns, the inserts' tables and columns, in order), built once: a statement built per call
# costs its cache key each time (docs/performance.md). With each, the encoders of its columns
# of a decorated type (JSON): their values are encoded before they go into an array, where a
# JSON list would otherwise read as one more dimension of it. One row a table takes a value a
# column instead of arrays, which cost SQLAlchemy's array processing and asyncpg's check of
# each element: about 120 µs of the client's CPU for five tables of 14 columns
# (docs/performance.md); an API write sends one row a table.
_Shape = tuple[tuple[sa.Table, tuple[str, ...]], ...]
_Encoders = dict[str, Callable[[Any], Any]]
_together: dict[tuple[bool, tuple[tuple[sa.Table, str], ...], _Shape], tuple[Any, _Encoders]] = {}


@functools.cache
def _delete_in(table: sa.Table, column: str) -> sa.Delete:
    return table.delete().where(table.c[column].in_(sa.bindparam("match_keys", expanding=True)))


@functools.cache
def _plain(table: sa.Table) -> sa.Insert:
    """A table's insert, built once: about 14 a payment, each of which cost 6 µs for its cache
    key when built per call."""
    return table.insert()


def _build(
    single: bool, deletes: tuple[tuple[sa.Table, str], ...], shape: _Shape, dialect: sa.Dialect
) -> tuple[Any, _Encoders]:
    """`WITH d0 AS (DELETE FROM t WHERE k = ANY(:d0)), …, w0 AS (INSERT INTO t0 (a, b) SELECT
    unnest(:w0_a), unnest(:w0_b)), … INSERT INTO tn …`: the arrays of one table are of one
    length, and unnest walks them side by side. `single`: `VALUES (:w0_a, :w0_b)` instead,
    each value through its column's type as in any insert."""
    encoders: _Encoders = {}
    statements: list[Any] = [
        table.delete().where(
            table.c[column]
            == sa.any_(sa.bindparam(f"d{i}", type_=postgresql.ARRAY(table.c[column].type)))
        )
        for i, (table, column) in enumerate(deletes)
    ]
    names = [f"d{i}" for i in range(len(deletes))]
    for i, (table, columns) in enumerate(shape):
        names.append(f"w{i}")
        if single:
            values = {c: sa.bindparam(f"w{i}_{c}", type_=table.c[c].type) for c in columns}
            statements.append(table.insert().values(values))
            continue
        arrays = []
        for c in columns:
            kind = table.c[c].type
            if isinstance(kind, TypeDecorator):
                encoders[f"w{i}_{c}"] = functools.partial(kind.process_bind_param, dialect=dialect)
                kind = kind.impl_instance
            arrays.append(sa.func.unnest(sa.bindparam(f"w{i}_{c}", type_=postgresql.ARRAY(kind))))
        statements.append(table.insert().from_select(list(columns), sa.select(*arrays)))
    *first, last = statements
    ctes = [statement.cte(name) for statement, name in zip(first, names[:-1], strict=True)]
    return last.add_cte(*ctes), encoders


async def insert(
    conn: AsyncConnection, table: sa.Table, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` (one row or several) now, or at the end of the `deferred` block `conn` is
    in."""
    block = _waiting.get(conn)
    if block is None:
        await conn.execute(_plain(table), rows if isinstance(rows, Mapping) else list(rows))
        return
    for row in [rows] if isinstance(rows, Mapping) else rows:
        block.rows.setdefault((table, frozenset(row)), []).append(row)


async def delete(conn: AsyncConnection, table: sa.Table, column: str, key: Any) -> None:
    """Delete the rows of `table` whose `column` is `key` now, or at the end of the `deferred`
    block `conn` is in, with its inserts (on PostgreSQL in their one statement). A deferred
    delete sees the rows the transaction held before the block's end, never the block's own
    inserts; nothing in the transaction may read the rows after it."""
    block = _waiting.get(conn)
    if block is None:
        await conn.execute(_delete_in(table, column), {"match_keys": [key]})
        return
    block.deletes.setdefault((table, column), []).append(key)
