"""The load generator: several OS processes, each an asyncio loop of keep-alive clients
(bench/client.py).

The parent forks `processes` children; each runs `clients` concurrent clients of one scenario
until the deadline and sends its `Tally` back with the CPU time it used itself
(`resource.getrusage`), so that the report can show the generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue
import random
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from client import Client
from scenarios import SCENARIOS, Ctx, Tally, paced_accept


@dataclass(frozen=True)
class Job:
    scenario: str
    url: str
    key: str
    seconds: float
    clients: int  # per process
    ids: list[str] = field(default_factory=list)
    # bench/growth.py: several merchants' keys (each request picks one) and (key, payment id)
    # pairs of stored payments, shared whole by every client (reads and lists change nothing).
    keys: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    # bench/sustained.py: payments a second offered on a clock (`paced_accept`), shared out among
    # the processes; `clients` is then each process's connections, not its concurrent loops.
    rate: float = 0.0


@dataclass
class Outcome:
    """The merged tallies of every generator process, with their CPU time and wall time."""

    tally: Tally
    wall_s: float
    cpu_s: float
    processes: int
    per_process_cpu_s: list[float]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _share(ids: list[str], i: int, n: int) -> list[str]:
    return ids[i::n] or list(ids)


async def _drive(job: Job, seed: int) -> Tally:
    tally = Tally()

    def rng(i: int) -> random.Random:
        return random.Random(seed * 1000 + i)

    async with Client(job.url, connections=job.clients) as client:
        until = time.perf_counter() + job.seconds
        if job.rate:
            ctx = Ctx(client, job.key, until, tally, [], rng(0))
            # Two seconds of arrivals in flight: far past any latency worth measuring.
            await paced_accept(ctx, job.rate, most=max(64, int(2 * job.rate)))
            return tally
        run = SCENARIOS[job.scenario]
        await asyncio.gather(
            *(
                # Each client its own share of the ids: two never refund the same payment.
                run(
                    Ctx(
                        client,
                        job.key,
                        until,
                        tally,
                        _share(job.ids, i, job.clients),
                        rng(i),
                        job.keys,
                        job.pairs,
                    )
                )
                for i in range(job.clients)
            )
        )
    return tally


def _child(job: Job, seed: int, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    cpu0, t0 = _cpu(), time.perf_counter()
    tally = _drive_sync(job, seed)
    out.put({"tally": asdict(tally), "cpu_s": _cpu() - cpu0, "wall_s": time.perf_counter() - t0})


def _drive_sync(job: Job, seed: int) -> Tally:
    return asyncio.run(_drive(job, seed))


def _merge(parts: list[dict[str, Any]]) -> Tally:
    total = Tally()
    for part in parts:
        t = part["tally"]
        total.create_s += t["create_s"]
        total.outcome_s += t["outcome_s"]
        total.acked += t["acked"]
        for name in ("ops", "requests", "accepted", "completed"):
            setattr(total, name, getattr(total, name) + t[name])
        for name in ("codes", "outcomes", "by_op", "errors"):
            mine = getattr(total, name)
            for k, v in t[name].items():
                mine[k] = mine.get(k, 0) + v
    return total


def run(job: Job, processes: int) -> Outcome:
    """Run `job` in `processes` forked generator processes and merge what they saw."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    shares = [
        replace(job, ids=_share(job.ids, i, processes), rate=job.rate / processes)
        for i in range(processes)
    ]
    procs = [
        ctx.Process(target=_child, args=(shares[i], i, out), daemon=True) for i in range(processes)
    ]
    for p in procs:
        p.start()
    parts: list[dict[str, Any]] = []
    deadline = time.monotonic() + job.seconds + 90
    # Drain the queue before joining: a child blocks on a full pipe until its result is read.
    while len(parts) < processes and time.monotonic() < deadline:
        try:
            parts.append(out.get(timeout=1.0))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    if len(parts) < processes:
        raise RuntimeError(f"{processes - len(parts)} load generator process(es) gave no result")
    cpus = [part["cpu_s"] for part in parts]
    # The rate's denominator: each process's own run, from its first request to its last answer.
    wall = max(part["wall_s"] for part in parts)
    return Outcome(_merge(parts), wall, sum(cpus), processes, cpus)


def cores() -> int:
    return os.cpu_count() or 1
