"""Inserts of a transaction that covers many payments, sent together at the end of its block.

A consumer that applies a batch (the processor's decisions and answers, the fraud worker's
assessments) writes, per payment, rows that nothing in the same transaction reads back: the
transaction log, outbox events, ledger entries and postings, balance transactions. Inside
`deferred(conn)`, `insert(conn, table, rows)` keeps them, and the block's end sends each table's
rows as one multi-row insert, in the order the tables were first written (a posting's entry goes
before it), still inside the transaction: they commit with everything else, or not at all. A
block that raises sends nothing. Outside such a block, `insert` executes at once.

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
        for (table, _), rows in waiting.items():
            await conn.execute(table.insert(), rows)
    finally:
        del _waiting[conn]


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
