"""The raw batched insert rate: rows/s when 100 rows go in one transaction (`executemany`).

On SQLite with the gateway's pragmas (WAL, synchronous=FULL): one fsync per 100 rows, so this is
about the most a single writer can put on disk. On PostgreSQL through asyncpg, one commit per
100 rows. No HTTP, no framework: the ceiling under every other figure.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path

BATCH = 100
BODY = json.dumps({"amount": 1999, "currency": "usd", "capture": True})


def _rows() -> list[tuple[str, str, float]]:
    now = time.time()
    return [(uuid.uuid4().hex, BODY, now) for _ in range(BATCH)]


def sqlite_batched(path: Path, seconds: float) -> dict[str, float]:
    """Rows/s and batches/s of `executemany` of 100 rows per commit on SQLite."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS raw_rows (id TEXT PRIMARY KEY, body TEXT, t REAL)")
        batches, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO raw_rows VALUES (?, ?, ?)", _rows())
            conn.execute("COMMIT")
            batches += 1
        wall = time.perf_counter() - t0
    finally:
        conn.close()
    return {"rows_per_s": batches * BATCH / wall, "commits_per_s": batches / wall, "seconds": wall}


async def _pg_batched(dsn: str, seconds: float) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_rows (id TEXT PRIMARY KEY, body TEXT, t FLOAT8)"
        )
        batches, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            async with conn.transaction():
                await conn.executemany("INSERT INTO raw_rows VALUES ($1, $2, $3)", _rows())
            batches += 1
        wall = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"rows_per_s": batches * BATCH / wall, "commits_per_s": batches / wall, "seconds": wall}


def postgres_batched(dsn: str, seconds: float) -> dict[str, float]:
    """Rows/s and commits/s of `executemany` of 100 rows per transaction on PostgreSQL."""
    return asyncio.run(_pg_batched(dsn, seconds))
