"""One measured scenario: the load, the server's CPU and memory, the database's writes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import loadgen
import machine
import procstat

CREATES = {
    "accept",
    "paced_accept",
    "end_to_end",
    "mixed_day",
    "peer_accept",
    "peer_end_to_end",
    "spread_accept",
}
COMPLETES = {"end_to_end", "mixed_day", "peer_end_to_end"}


def percentiles(samples: list[float]) -> dict[str, float] | None:
    """p50/p95/p99/max in milliseconds (nearest rank), or None without samples."""
    if not samples:
        return None
    xs = sorted(samples)

    def rank(q: float) -> float:
        return round(xs[min(len(xs) - 1, max(0, int(q * len(xs) + 0.999999) - 1))] * 1000, 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0), "n": len(xs)}


def _rate(n: int | None, seconds: float) -> float | None:
    return None if n is None else round(n / seconds, 1) if seconds > 0 else 0.0


def measure(
    job: loadgen.Job,
    processes: int,
    sample: Callable[[], list[procstat.ProcSample]],
    counters: Callable[[], dict[str, int | None]] | None = None,
) -> tuple[dict[str, Any], loadgen.Outcome]:
    """Run `job` and describe it: rates, latencies, server CPU and memory, database writes."""
    # The host's speed just before the load, the run otherwise idle (bench/machine.py).
    host = machine.speed()
    load0 = os.getloadavg()[0]
    before, db0 = sample(), counters() if counters else None
    out = loadgen.run(job, processes)
    after, db1 = sample(), counters() if counters else None
    wall, t = out.wall_s, out.tally
    server = procstat.delta(before, after)
    server_cpu = sum(float(p["cpu_s"]) for p in server)
    result: dict[str, Any] = {
        "scenario": job.scenario,
        "seconds": round(wall, 2),
        "clients": job.clients * processes,
        "requests": t.requests,
        "ops": t.ops,
        "ops_per_s": _rate(t.ops, wall),
        "accepted_per_s": _rate(t.accepted, wall) if job.scenario in CREATES else None,
        "completed_per_s": _rate(t.completed, wall) if job.scenario in COMPLETES else None,
        "create_ms": percentiles(t.create_s),
        "outcome_ms": percentiles(t.outcome_s),
        "status_codes": t.codes,
        "outcomes": t.outcomes,
        "by_op": t.by_op,
        "errors": t.errors,
        "generator": {
            "processes": processes,
            "cpu_s": round(out.cpu_s, 2),
            # 100 % would mean a generator process was saturated (and the figure suspect).
            "busiest_process_cpu_pct": round(100 * max(out.per_process_cpu_s) / wall, 1),
        },
        "server": {
            "cpu_s": round(server_cpu, 2),
            "cpu_pct_of_machine": round(100 * server_cpu / (wall * loadgen.cores()), 1),
            # CPU time of every server process (the pipeline's included) per successful op.
            "cpu_ms_per_op": round(1000 * server_cpu / t.ops, 1) if t.ops else None,
            "peak_rss_mb": max((float(p["peak_rss_mb"]) for p in server), default=0.0),
            "processes": server,
        },
        "db": _db(db0, db1, wall),
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": host,
    }
    return result, out


def _db(
    db0: dict[str, int | None] | None, db1: dict[str, int | None] | None, wall: float
) -> dict[str, Any] | None:
    if db0 is None or db1 is None:
        return None

    def per_s(name: str) -> float | None:
        a, b = db0.get(name), db1.get(name)
        return None if a is None or b is None else round((b - a) / wall, 1)

    commits = per_s("commits")
    return {
        # PostgreSQL gives each write transaction an id (`servers.Gateway.db_counters`); SQLite
        # keeps no count, so outbox rows written per second stand in: nearly every write
        # transaction of the gateway appends at least one event, so it is a proxy, not a count.
        "commits_per_s": commits,
        "commits_source": "write transactions (transaction ids)" if commits is not None else None,
        "outbox_rows_per_s": per_s("outbox_rows"),
        "payment_rows_per_s": per_s("payment_rows"),
        "succeeded_delta": _diff(db0, db1, "succeeded"),
    }


def _diff(a: dict[str, int | None], b: dict[str, int | None], name: str) -> int | None:
    x, y = a.get(name), b.get(name)
    return None if x is None or y is None else y - x


def drain(backlog: Callable[[], int], timeout: float) -> dict[str, float | int]:
    """Wait until the pipeline has no payment left in flight (or `timeout` passes)."""
    t0 = time.monotonic()
    left = backlog()
    while left and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        left = backlog()
    return {"drain_s": round(time.monotonic() - t0, 2), "backlog_left": left}
