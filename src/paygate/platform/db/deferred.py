"""Inserts, deletes and updates of a transaction that covers many payments, sent together at the
end of its block.

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
statement (`DELETE … WHERE column = ANY(:keys)`), on SQLite before the inserts.
`update(conn, table, column, key, values)` keeps the values to set on one row by a unique key,
merged by row: on PostgreSQL a `WITH` of the same statement per set of columns (`UPDATE … FROM`
the rows' arrays), on SQLite an `executemany` before the inserts. Either way a deferred delete
or update sees what the transaction held before the block's end, never the block's own
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
# Updates by table and key column, then by key: the values to set, later ones merged over
# earlier ones (what running them in turn would leave).
_Updates = dict[tuple[sa.Table, str], dict[Any, dict[str, Any]]]


@dataclass
class _Block:
    rows: _Rows = field(default_factory=dict)
    deletes: _Deletes = field(default_factory=dict)
    updates: _Updates = field(default_factory=dict)


_waiting: WeakKeyDictionary[AsyncConnection, _Block] = WeakKeyDictionary()


@asynccontextmanager
async def deferred(conn: AsyncConnection) -> AsyncIterator[None]:
    """Keep `insert`'s rows, `delete`'s keys and `update`'s values on `conn` until the block
    ends, then send them. Inside another block, the outer one sends them; if this one raises,
    what it added is dropped (as a savepoint around it rolls back the statements it sent)."""
    outer = _waiting.get(conn)
    if outer is not None:
        marks = _marks(outer.rows), _marks(outer.deletes)
        updates = {
            where: {k: dict(v) for k, v in keyed.items()} for where, keyed in outer.updates.items()
        }
        try:
            yield
        except BaseException:
            _drop_since(outer.rows, marks[0])
            _drop_since(outer.deletes, marks[1])
            outer.updates.clear()
            outer.updates.update(updates)
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


def _update_groups(
    updates: _Updates,
) -> dict[tuple[sa.Table, str, tuple[str, ...]], list[dict[str, Any]]]:
    """The waiting updates as rows (the key column and the columns set) grouped by table, key
    column and set of columns: each group is one statement."""
    groups: dict[tuple[sa.Table, str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for (table, column), keyed in updates.items():
        for key, values in keyed.items():
            groups.setdefault((table, column, tuple(sorted(values))), []).append(
                {column: key, **values}
            )
    return groups


async def _send(conn: AsyncConnection, block: _Block) -> None:
    waiting, deletes, updates = block.rows, block.deletes, _update_groups(block.updates)
    if not waiting and not deletes and not updates:
        return
    if conn.dialect.name != "postgresql":  # SQLite: a call into the library each, no round trip
        # The deletes and updates first: on PostgreSQL they see what the transaction held
        # before the block's end, never the block's own rows, and so they do here.
        for (table, column), matched in deletes.items():
            await conn.execute(_delete_in(table, column), {"match_keys": matched})
        for (table, column, columns), changed in updates.items():
            sets = [
                {f"set_{c}": row[c] for c in columns} | {"match_key": row[column]}
                for row in changed
            ]
            await conn.execute(_update_by(table, column, columns), sets)
        straight = isinstance(conn, sqlite_inline.InlineConnection) and not conn.sync_engine.echo
        for (table, keys), inserted in waiting.items():
            if straight:  # to the driver, past SQLAlchemy's execution (`insert_rows`)
                sqlite_inline.insert_rows(conn, table, keys, inserted)
            else:
                await conn.execute(_plain(table), inserted)
        return
    shape = tuple((table, tuple(sorted(columns))) for table, columns in waiting)
    # A row a table (an API write, a batch of one payment): plain values, no arrays.
    single = all(len(r) == 1 for r in waiting.values()) and all(
        len(r) == 1 for r in updates.values()
    )
    key = (single, tuple(deletes), tuple(updates), shape)
    built = _together.get(key)
    if built is None:
        built = _together[key] = _build(*key, conn.dialect)
    statement, encoders = built
    params: dict[str, Any] = {f"d{i}": matched for i, matched in enumerate(deletes.values())}
    sent: list[tuple[str, tuple[str, ...], Sequence[Mapping[str, Any]]]] = [
        (f"u{i}", (column, *columns), rows)
        for i, ((_, column, columns), rows) in enumerate(updates.items())
    ]
    sent += [
        (f"w{i}", columns, rows)
        for i, ((_, columns), rows) in enumerate(zip(shape, waiting.values(), strict=True))
    ]
    for prefix, columns, rows in sent:
        for column in columns:
            name = f"{prefix}_{column}"
            if single:
                params[name] = rows[0][column]
                continue
            encode = encoders.get(name)
            column_values = [row[column] for row in rows]
            params[name] = [encode(v) for v in column_values] if encode else column_values
    await conn.execute(statement, params)


# The one-statement writes by shape (whether every table has one row; the deletes' tables and
# columns, the updates' tables, key columns and columns set, the inserts' tables and columns,
# in order), built once: a statement built per call
# costs its cache key each time (docs/performance.md). With each, the encoders of its columns
# of a decorated type (JSON): their values are encoded before they go into an array, where a
# JSON list would otherwise read as one more dimension of it. One row a table takes a value a
# column instead of arrays, which cost SQLAlchemy's array processing and asyncpg's check of
# each element: about 120 µs of the client's CPU for five tables of 14 columns
# (docs/performance.md); an API write sends one row a table.
_Shape = tuple[tuple[sa.Table, tuple[str, ...]], ...]
_Encoders = dict[str, Callable[[Any], Any]]
_Deleted = tuple[tuple[sa.Table, str], ...]
_Updated = tuple[tuple[sa.Table, str, tuple[str, ...]], ...]
_together: dict[tuple[bool, _Deleted, _Updated, _Shape], tuple[Any, _Encoders]] = {}


@functools.cache
def _delete_in(table: sa.Table, column: str) -> sa.Delete:
    return table.delete().where(table.c[column].in_(sa.bindparam("match_keys", expanding=True)))


@functools.cache
def _update_by(table: sa.Table, column: str, columns: tuple[str, ...]) -> sa.Update:
    return (
        table.update()
        .where(table.c[column] == sa.bindparam("match_key"))
        .values({c: sa.bindparam(f"set_{c}") for c in columns})
    )


@functools.cache
def _plain(table: sa.Table) -> sa.Insert:
    """A table's insert, built once: about 14 a payment, each of which cost 6 µs for its cache
    key when built per call."""
    return table.insert()


def _build(
    single: bool, deletes: _Deleted, updates: _Updated, shape: _Shape, dialect: sa.Dialect
) -> tuple[Any, _Encoders]:
    """`WITH d0 AS (DELETE FROM t WHERE k = ANY(:d0)), …, u0 AS (UPDATE t SET a = v.a FROM
    (SELECT unnest(:u0_k) AS k, unnest(:u0_a) AS a) AS v WHERE t.k = v.k), …, w0 AS (INSERT
    INTO t0 (a, b) SELECT unnest(:w0_a), unnest(:w0_b)), … INSERT INTO tn …`: the arrays of one
    table are of one length, and unnest walks them side by side. `single`: plain values
    instead (`VALUES (:w0_a, :w0_b)`, `SET a = :u0_a WHERE k = :u0_k`), each through its
    column's type as in any statement."""
    encoders: _Encoders = {}

    def array(name: str, kind: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
        if isinstance(kind, TypeDecorator):
            encoders[name] = functools.partial(kind.process_bind_param, dialect=dialect)
            kind = kind.impl_instance
        return sa.bindparam(name, type_=postgresql.ARRAY(kind))

    statements: list[Any] = [
        table.delete().where(table.c[column] == sa.any_(array(f"d{i}", table.c[column].type)))
        for i, (table, column) in enumerate(deletes)
    ]
    names = [f"d{i}" for i in range(len(deletes))]
    for i, (table, column, columns) in enumerate(updates):
        names.append(f"u{i}")
        if single:
            where = table.c[column] == sa.bindparam(f"u{i}_{column}", type_=table.c[column].type)
            sets: dict[str, sa.ColumnElement[Any]] = {
                c: sa.bindparam(f"u{i}_{c}", type_=table.c[c].type) for c in columns
            }
        else:
            rows = sa.select(
                *(
                    sa.func.unnest(array(f"u{i}_{c}", table.c[c].type)).label(c)
                    for c in (column, *columns)
                )
            ).subquery(f"v{i}")
            where = table.c[column] == rows.c[column]
            sets = {c: rows.c[c] for c in columns}
        statements.append(table.update().where(where).values(sets))
    for i, (table, columns) in enumerate(shape):
        names.append(f"w{i}")
        if single:
            values = {c: sa.bindparam(f"w{i}_{c}", type_=table.c[c].type) for c in columns}
            statements.append(table.insert().values(values))
            continue
        arrays = [sa.func.unnest(array(f"w{i}_{c}", table.c[c].type)) for c in columns]
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


async def update(
    conn: AsyncConnection, table: sa.Table, column: str, key: Any, values: Mapping[str, Any]
) -> None:
    """Set `values` on the row of `table` whose `column` (a unique key) is `key`, now, or at the
    end of the `deferred` block `conn` is in, with its inserts (on PostgreSQL in their one
    statement). Updates of one row in a block are merged, later values over earlier ones, as
    running them in turn would leave it. Like a deferred delete it sees what the transaction
    held before the block's end, so the row must not be one the block inserts; nothing in the
    transaction may read the row after it."""
    if column in values:
        raise ValueError("the key column is not one of the values it changes: " + column)
    block = _waiting.get(conn)
    if block is None:
        sets = {f"set_{c}": v for c, v in values.items()} | {"match_key": key}
        await conn.execute(_update_by(table, column, tuple(sorted(values))), sets)
        return
    for (waiting_table, _), rows in block.rows.items():
        if waiting_table is table and any(row.get(column) == key for row in rows):
            raise ValueError("a deferred update cannot reach a row its own block inserts")
    block.updates.setdefault((table, column), {}).setdefault(key, {}).update(values)


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
