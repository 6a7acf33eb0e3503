"""Group commit on its own: write transactions per second on SQLite (WAL, synchronous=FULL)
through the gateway's `Database`, each commit alone (`group_commit_max=1`, how every write
committed before) and shared (the default), at several numbers of concurrent writers.

    python bench/group_commit.py [--seconds 3] [--writers 1,8,32,128]

Each transaction writes three rows of about a payment's size (a payment, its log entry, its
outbox event), like the API's create. Printed per case: transactions/s, commits/s (the disk's
fsyncs), transactions per commit, p50/p99 of one transaction, and the process's CPU per
transaction. Alternating cases in one run, so a busier machine hurts both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from paygate.platform.db import Database

ROW = "x" * 600  # about an outbox event's JSON


async def _case(path: Path, writers: int, seconds: float, group_max: int) -> dict[str, float]:
    db = Database(f"sqlite:///{path}", group_commit_max=group_max)
    commits: list[int] = []
    sa.event.listen(db.engine.sync_engine, "commit", lambda _c: commits.append(1))
    async with db.transaction() as conn:
        await conn.execute(
            sa.text("CREATE TABLE IF NOT EXISTS t (id INTEGER, kind TEXT, body TEXT)")
        )
    commits.clear()
    latencies: list[float] = []
    until = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        n = 0
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            async with db.transaction() as conn:
                for kind in ("payment", "log", "event"):
                    await conn.execute(
                        sa.text("INSERT INTO t VALUES (:id, :kind, :body)"),
                        {"id": w * 1_000_000 + n, "kind": kind, "body": ROW},
                    )
            latencies.append(time.perf_counter() - t0)
            n += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await db.dispose()
    done = len(latencies)
    latencies.sort()
    return {
        "tx_per_s": done / wall,
        "commits_per_s": len(commits) / wall,
        "tx_per_commit": done / max(1, len(commits)),
        "p50_ms": 1000 * latencies[done // 2],
        "p99_ms": 1000 * latencies[min(done - 1, int(done * 0.99))],
        "cpu_ms_per_tx": 1000 * cpu / done,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writers", default="1,8,32,128")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="paygate-group-commit-"))
    print(f"SQLite WAL synchronous=FULL, {a.seconds:g} s per case, load {os.getloadavg()[0]:.1f}")
    print("| writers | commits | tx/s | commits/s | tx/commit | p50 ms | p99 ms | CPU ms/tx |")
    print("|---|---|---|---|---|---|---|---|")
    for writers in (int(w) for w in a.writers.split(",")):
        for label, group_max in (("each alone", 1), ("shared", 64)):
            path = folder / f"{writers}-{group_max}.db"
            r = asyncio.run(_case(path, writers, a.seconds, group_max))
            print(
                f"| {writers} | {label} | {r['tx_per_s']:.0f} | {r['commits_per_s']:.0f} "
                f"| {r['tx_per_commit']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['cpu_ms_per_tx']:.2f} |"
            )


if __name__ == "__main__":
    main()
