"""Inserts of a transaction that covers many payments, sent together at the end of its block.

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

Only rows that the rest of the transaction does not read may be deferred; a constraint that one
of them breaks is then reported at the block's end, for the whole batch (whose caller applies
each payment alone after a failed batch).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeDecorator

from paygate.platform.db import sqlite_inline

# Rows waiting, by connection, then by table and column set (each multi-row insert names one set
# of columns), in the order first written.
_Waiting = dict[tuple[sa.Table, frozenset[str]], list[Mapping[str, Any]]]
_waiting: WeakKeyDictionary[AsyncConnection, _Waiting] = WeakKeyDictionary()


@asynccontextmanager
async def deferred(conn: AsyncConnection) -> AsyncIterator[None]:
    """Keep `insert`'s rows on `conn` until the block ends, then send them. Inside another
    block, the outer one sends them; if this one raises, its rows are dropped (as a savepoint
    around it rolls back the statements it sent)."""
    outer = _waiting.get(conn)
    if outer is not None:
        mark = {key: len(rows) for key, rows in outer.items()}
        try:
            yield
        except BaseException:
            for key in list(outer):
                if key in mark:
                    del outer[key][mark[key] :]
                else:
                    del outer[key]
            raise
        return
    waiting: _Waiting = {}
    _waiting[conn] = waiting
    try:
        yield
        await _send(conn, waiting)
    finally:
        del _waiting[conn]


async def _send(conn: AsyncConnection, waiting: _Waiting) -> None:
    if not waiting:
        return
    if conn.dialect.name != "postgresql":  # SQLite: a call into the library each, no round trip
        straight = isinstance(conn, sqlite_inline.InlineConnection) and not conn.sync_engine.echo
        for (table, keys), rows in waiting.items():
            if straight:  # to the driver, past SQLAlchemy's execution (`insert_rows`)
                sqlite_inline.insert_rows(conn, table, keys, rows)
            else:
                await conn.execute(_plain(table), rows)
        return
    shape = tuple((table, tuple(sorted(columns))) for table, columns in waiting)
    if all(len(rows) == 1 for rows in waiting.values()):
        # A row a table (an API write, a batch of one payment): plain values, no arrays.
        single = _single.get(shape)
        if single is None:
            single = _single[shape] = _build_single(shape)
        await conn.execute(
            single,
            {
                f"w{i}_{column}": rows[0][column]
                for i, ((_, columns), rows) in enumerate(zip(shape, waiting.values(), strict=True))
                for column in columns
            },
        )
        return
    built = _together.get(shape)
    if built is None:
        built = _together[shape] = _build(shape, conn.dialect)
    statement, encoders = built
    params = {}
    for i, ((_, columns), rows) in enumerate(zip(shape, waiting.values(), strict=True)):
        for column in columns:
            name = f"w{i}_{column}"
            encode = encoders.get(name)
            column_values = [row[column] for row in rows]
            params[name] = [encode(v) for v in column_values] if encode else column_values
    await conn.execute(statement, params)


# The one-statement inserts by shape (tables and columns, in order), built once: a statement
# built per call costs its cache key each time (docs/performance.md). With each, the encoders of
# its columns of a decorated type (JSON): their values are encoded before they go into an array,
# where a JSON list would otherwise read as one more dimension of it.
_Shape = tuple[tuple[sa.Table, tuple[str, ...]], ...]
_Encoders = dict[str, Callable[[Any], Any]]
_together: dict[_Shape, tuple[sa.Insert, _Encoders]] = {}
# The same statement for one row a table, with a value a column: an array costs SQLAlchemy's
# array processing and asyncpg's check of each element, about 120 µs of the client's CPU for
# five tables of 14 columns (docs/performance.md); an API write sends one row a table.
_single: dict[_Shape, sa.Insert] = {}


@functools.cache
def _plain(table: sa.Table) -> sa.Insert:
    """A table's insert, built once: about 14 a payment, each of which cost 6 µs for its cache
    key when built per call."""
    return table.insert()


def _build_single(shape: _Shape) -> sa.Insert:
    """`WITH w0 AS (INSERT INTO t0 (a, b) VALUES (:w0_a, :w0_b)), … INSERT INTO tn …`, each
    value through its column's type as in any insert."""
    inserts = [
        table.insert().values({c: sa.bindparam(f"w{i}_{c}", type_=table.c[c].type) for c in cols})
        for i, (table, cols) in enumerate(shape)
    ]
    *first, last = inserts
    return last.add_cte(*(insert.cte(f"w{i}") for i, insert in enumerate(first)))


def _build(shape: _Shape, dialect: sa.Dialect) -> tuple[sa.Insert, _Encoders]:
    """`WITH w0 AS (INSERT INTO t0 (a, b) SELECT unnest(:w0_a), unnest(:w0_b)), … INSERT INTO
    tn …`: the arrays of one table are of one length, and unnest walks them side by side."""
    encoders: _Encoders = {}
    inserts = []
    for i, (table, columns) in enumerate(shape):
        arrays = []
        for c in columns:
            kind = table.c[c].type
            if isinstance(kind, TypeDecorator):
                encoders[f"w{i}_{c}"] = functools.partial(kind.process_bind_param, dialect=dialect)
                kind = kind.impl_instance
            arrays.append(sa.func.unnest(sa.bindparam(f"w{i}_{c}", type_=postgresql.ARRAY(kind))))
        inserts.append(table.insert().from_select(list(columns), sa.select(*arrays)))
    *first, last = inserts
    return last.add_cte(*(insert.cte(f"w{i}") for i, insert in enumerate(first))), encoders


async def insert(
    conn: AsyncConnection, table: sa.Table, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` (one row or several) now, or at the end of the `deferred` block `conn` is
    in."""
    waiting = _waiting.get(conn)
    if waiting is None:
        await conn.execute(_plain(table), rows if isinstance(rows, Mapping) else list(rows))
        return
    for row in [rows] if isinstance(rows, Mapping) else rows:
        waiting.setdefault((table, frozenset(row)), []).append(row)
