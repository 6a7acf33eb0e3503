"""Inserts of a transaction that covers many payments, sent together at the end of its block.

A consumer that applies a batch (the processor's decisions and answers, the fraud worker's
assessments) writes, per payment, rows that nothing in the same transaction reads back: the
transaction log, outbox events, ledger entries and postings, balance transactions. Inside
`deferred(conn)`, `insert(conn, table, rows)` keeps them, and the block's end sends each table's
rows as one multi-row insert, in the order the tables were first written (a posting's entry goes
before it), still inside the transaction: they commit with everything else, or not at all. A
block that raises sends nothing. Outside such a block, `insert` executes at once.

On PostgreSQL, a block that holds one row per table (a single payment's writes: the API's
create, the processor's answer to one payment) sends all of them as one statement, each table's
insert a data-modifying `WITH` of the last: one round trip where there were as many as tables.
Its shape, and so its compiled form, is the same at every call. A foreign key between them is
checked at the statement's end, when every row is in.

Only rows that the rest of the transaction does not read may be deferred; a constraint that one
of them breaks is then reported at the block's end, for the whole batch (whose caller applies
each payment alone after a failed batch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# Rows waiting, by connection, then by table and column set (each multi-row insert names one set
# of columns), in the order first written.
_Waiting = dict[tuple[sa.Table, frozenset[str]], list[Mapping[str, Any]]]
_waiting: WeakKeyDictionary[AsyncConnection, _Waiting] = WeakKeyDictionary()


@asynccontextmanager
async def deferred(conn: AsyncConnection) -> AsyncIterator[None]:
    """Keep `insert`'s rows on `conn` until the block ends, then send them."""
    if conn in _waiting:  # already inside one: the outer block sends them
        yield
        return
    waiting: _Waiting = {}
    _waiting[conn] = waiting
    try:
        yield
        await _send(conn, waiting)
    finally:
        del _waiting[conn]


async def _send(conn: AsyncConnection, waiting: _Waiting) -> None:
    if (
        len(waiting) > 1
        and conn.dialect.name == "postgresql"
        and all(len(rows) == 1 for rows in waiting.values())
    ):
        shape = tuple(waiting)
        statement = _together.get(shape)
        if statement is None:
            statement = _together[shape] = _build(shape)
        params = {
            f"w{i}_{column}": value
            for i, rows in enumerate(waiting.values())
            for column, value in rows[0].items()
        }
        await conn.execute(statement, params)
        return
    for (table, _), rows in waiting.items():
        await conn.execute(table.insert(), rows)


# The one-statement inserts by shape (tables and columns, in order), built once: a statement
# built per call costs its cache key each time (docs/performance.md).
_Shape = tuple[tuple[sa.Table, frozenset[str]], ...]
_together: dict[_Shape, sa.Insert] = {}


def _build(shape: _Shape) -> sa.Insert:
    *first, last = [
        table.insert().values({c: sa.bindparam(f"w{i}_{c}", type_=table.c[c].type) for c in cols})
        for i, (table, cols) in enumerate(shape)
    ]
    return last.add_cte(*(insert.cte(f"w{i}") for i, insert in enumerate(first)))


async def insert(
    conn: AsyncConnection, table: sa.Table, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` (one row or several) now, or at the end of the `deferred` block `conn` is
    in."""
    waiting = _waiting.get(conn)
    if waiting is None:
        await conn.execute(table.insert(), rows if isinstance(rows, Mapping) else list(rows))
        return
    for row in [rows] if isinstance(rows, Mapping) else rows:
        waiting.setdefault((table, frozenset(row)), []).append(row)
