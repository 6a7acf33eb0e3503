"""The bank's durable state: one SQLite file, one writer.

Every call runs on one dedicated thread holding one connection, so operations apply one at a
time: two captures of one authorization, or refunds racing for the same captured amount, can never
both read the old totals. Each operation is a `BEGIN IMMEDIATE` transaction, so a second process
opening the same file is serialized too. WAL with `synchronous=FULL` makes every commit durable
before the bank answers: an approved operation survives a kill of the process (and of the host).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from paygate.banksim.models import Operation

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    reference TEXT NOT NULL UNIQUE,
    payment TEXT NOT NULL,
    operation TEXT NOT NULL,
    parent TEXT,
    amount INTEGER NOT NULL,
    currency TEXT,
    status TEXT NOT NULL,
    decline_code TEXT,
    card_brand TEXT,
    card_last4 TEXT,
    card_fingerprint TEXT,
    request_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_payment ON operations (payment, seq);
CREATE INDEX IF NOT EXISTS operations_parent ON operations (parent, seq);
CREATE INDEX IF NOT EXISTS operations_created ON operations (created_ms);
"""

_COLUMNS = (
    "id, reference, payment, operation, parent, amount, currency, status, decline_code, "
    "card_brand, card_last4, card_fingerprint, request_hash, created_ms"
)
_SELECT = f"SELECT {_COLUMNS} FROM operations"  # noqa: S608 (constant column list)
_INSERT = f"INSERT INTO operations ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"  # noqa: S608


class ReferenceConflict(Exception):
    """The reference is taken by an operation with a different request."""


class StoreView(Protocol):
    """What the operation rules may read while their transaction holds the write lock."""

    def get(self, reference: str) -> Operation | None: ...

    def children(self, parent: str) -> list[Operation]: ...


def _row(values: tuple[Any, ...]) -> Operation:
    return Operation(*values)


def _values(op: Operation) -> tuple[Any, ...]:
    return (
        op.id,
        op.reference,
        op.payment,
        op.operation,
        op.parent,
        op.amount,
        op.currency,
        op.status,
        op.decline_code,
        op.card_brand,
        op.card_last4,
        op.card_fingerprint,
        op.request_hash,
        op.created_ms,
    )


class _View:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, reference: str) -> Operation | None:
        found = self._conn.execute(f"{_SELECT} WHERE reference = ?", (reference,)).fetchone()
        return None if found is None else _row(found)

    def children(self, parent: str) -> list[Operation]:
        rows = self._conn.execute(f"{_SELECT} WHERE parent = ? ORDER BY seq", (parent,))
        return [_row(r) for r in rows.fetchall()]


class Store:
    """The operations table. Opens its file on first use, so an app mounted inside another (whose
    lifespan never runs) works as well as a stand-alone one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="banksim-store"
        )

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the bank store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._on_thread, fn)

    def _on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        return conn

    async def apply(
        self,
        reference: str,
        operation: str,
        request_hash: str,
        build: Callable[[StoreView], Operation],
    ) -> tuple[Operation, bool]:
        """Record the operation `build` decides, unless the reference exists.

        Returns the operation and whether it is a replay: the same reference with the same
        operation and request gives back the first answer and applies nothing; a different one
        raises `ReferenceConflict`. `build` runs inside the write transaction and must be pure.
        """

        def txn(conn: sqlite3.Connection) -> tuple[Operation, bool]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                view = _View(conn)
                existing = view.get(reference)
                if existing is not None:
                    conn.execute("ROLLBACK")
                    if existing.operation == operation and existing.request_hash == request_hash:
                        return existing, True
                    raise ReferenceConflict(reference)
                op = build(view)
                conn.execute(_INSERT, _values(op))
                conn.execute("COMMIT")
                return op, False
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return await self._run(txn)

    async def get(self, reference: str) -> Operation | None:
        """The operation answered under `reference`, if any."""
        return await self._run(lambda conn: _View(conn).get(reference))

    async def by_payment(self, payment: str) -> list[Operation]:
        """The operations of one payment, in the order applied."""

        def query(conn: sqlite3.Connection) -> list[Operation]:
            rows = conn.execute(f"{_SELECT} WHERE payment = ? ORDER BY seq", (payment,))
            return [_row(r) for r in rows.fetchall()]

        return await self._run(query)

    async def settled_between(self, start_ms: int, end_ms: int) -> list[Operation]:
        """Approved money-moving operations with `start_ms <= created_ms < end_ms`."""

        def query(conn: sqlite3.Connection) -> list[Operation]:
            rows = conn.execute(
                f"{_SELECT} WHERE status = 'approved' "
                "AND operation IN ('sale', 'capture', 'refund') "
                "AND created_ms >= ? AND created_ms < ? ORDER BY seq",
                (start_ms, end_ms),
            )
            return [_row(r) for r in rows.fetchall()]

        return await self._run(query)

    async def close(self) -> None:
        """Close the connection and stop the thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut(_: object = None) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(executor, shut)
        executor.shutdown(wait=False)
