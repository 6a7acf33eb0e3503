"""Before and after: the same scenarios on two versions of the gateway, in one run.

    python bench/compare.py --before REV [--before-env K=V ...] [--after-env K=V ...]
                            [--mode embedded|scaleout] [--scenarios accept,end_to_end]
                            [--seconds S] [--rounds N] [--clients C] [--rate R]

`--before` is a git revision, checked out into a temporary worktree; the after side is this
working tree. Each round starts a fresh gateway of each side in turn (ABAB…, so that a machine
that gets busier part way hurts both sides alike) and runs every scenario on it; the table gives
the median over the rounds of each figure, and the after/before ratio. `--before-env` and
`--after-env` set PAYGATE_ settings of one side (compare a setting on one tree with
`--before HEAD`). The scenario `paced_accept` offers `--rate` payments a second on a clock
(bench/sustained.py): CPU a payment and the create call's latency at a load the gateway keeps up
with, where the closed loop's scenarios give them at its most. On SQLite it also reads, from
/metrics, how many write transactions shared each commit (`paygate_db_group_commit_writers`);
on PostgreSQL, its write transactions and WAL fsyncs (`Gateway.pg_writes`, `pg_stat_wal`) and
its processes' CPU a payment beside each worker's;
scale-out, the commands its Redis served per operation (counted after the backlog drained).
docs/performance.md records what it printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import loadgen
import machine
import servers
from measure import drain, measure

ROOT = Path(__file__).resolve().parent.parent


def _options(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the before side")
    ap.add_argument("--before-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--after-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--mode", choices=("embedded", "scaleout"), default="embedded")
    ap.add_argument("--scenarios", default="accept,end_to_end")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rate", type=float, default=50.0, help="payments/s of paced_accept")
    return ap.parse_args(argv)


def _env(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def _group_commits(url: str) -> tuple[float, float] | None:
    """(commits, writers) of the group commit so far, from the gateway's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^paygate_db_group_commit_writers_(count|sum)\S* (\S+)$", text, re.M)
    }
    if "count" not in found:
        return None
    return found["count"], found["sum"]


def _pg_commits(gw: servers.Gateway) -> tuple[float, float] | None:
    """(write transactions, WAL fsyncs) of the gateway's PostgreSQL so far."""
    if gw.pg is None:
        return None
    syncs = gw.query("SELECT wal_sync FROM pg_stat_wal")[0][0]
    return float(gw.pg_writes()), float(syncs)


def _redis_commands(gw: servers.Gateway) -> float | None:
    """Commands the gateway's Redis has served so far (`INFO commandstats`, less its INFOs)."""
    if gw.redis is None:
        return None
    import redis

    client = redis.Redis.from_url(gw.redis.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return float(sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info"))


def _one(side: str, src: Path, env: dict[str, str], a: argparse.Namespace) -> dict[str, Any]:
    """A fresh gateway of one side, every scenario once."""
    folder = Path(tempfile.mkdtemp(prefix=f"paygate-compare-{side}-"))
    pg = servers.Postgres(folder / "postgres") if a.mode == "scaleout" else None
    redis = servers.Redis(folder / "redis") if a.mode == "scaleout" else None
    sink, webhooks = servers.sink(folder)  # the merchant's endpoint, as in `make bench`
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)  # the side's code, ahead of the installed package
    try:
        gw = servers.Gateway(a.mode, folder, pg, redis, webhooks=webhooks)
        gw.server.env.update(env)
        gw.start()
        key = gw.create_merchant()
        out: dict[str, Any] = {"machine": machine.speed()}  # the host's speed for this side
        for name in a.scenarios.split(","):
            rate = a.rate if name == "paced_accept" else 0.0
            job = loadgen.Job(name, gw.url, key, a.seconds, a.clients // a.processes, rate=rate)
            shared0, pg0, redis0 = _group_commits(gw.url), _pg_commits(gw), _redis_commands(gw)
            sent0 = servers.received(webhooks)
            figures, _ = measure(job, a.processes, gw.sample)
            shared1, pg1 = _group_commits(gw.url), _pg_commits(gw)
            if shared0 and shared1 and shared1[0] > shared0[0]:
                commits = shared1[0] - shared0[0]
                figures["commits_per_s"] = round(commits / figures["seconds"], 1)
                figures["writers_per_commit"] = round((shared1[1] - shared0[1]) / commits, 2)
            if pg0 and pg1:
                commits, syncs = pg1[0] - pg0[0], pg1[1] - pg0[1]
                figures["commits_per_s"] = round(commits / figures["seconds"], 1)
                figures["commits_per_wal_sync"] = round(commits / syncs, 2) if syncs else None
            drain(gw.backlog, timeout=120)
            if figures["ops"]:  # the webhooks sent by the end of the drain, per operation
                sent = servers.received(webhooks) - sent0
                figures["webhooks_per_op"] = round(sent / int(figures["ops"]), 2)
            redis1 = _redis_commands(gw)  # after the drain: the pipeline's work of every payment
            if redis0 is not None and redis1 is not None and figures["ops"]:
                figures["redis_per_op"] = round((redis1 - redis0) / int(figures["ops"]), 2)
            out[name] = figures
        gw.server.stop()
        return out
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        sink.stop()
        for engine in (pg, redis):
            if engine is not None:
                engine.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _role_cpu(figures: dict[str, Any], role: str) -> float | None:
    """CPU per operation of the scale-out processes whose name holds `role` (None embedded)."""
    procs = [p for p in figures["server"]["processes"] if role in p["name"]]
    if not procs or not figures["ops"]:
        return None
    return round(1000 * sum(float(p["cpu_s"]) for p in procs) / int(figures["ops"]), 1)


FIGURES = (
    ("ok/s", lambda f: f["ops_per_s"]),
    ("create p50", lambda f: (f["create_ms"] or {}).get("p50")),
    ("create p99", lambda f: (f["create_ms"] or {}).get("p99")),
    ("outcome p50", lambda f: (f["outcome_ms"] or {}).get("p50")),
    ("outcome p99", lambda f: (f["outcome_ms"] or {}).get("p99")),
    ("CPU ms/op", lambda f: f["server"]["cpu_ms_per_op"]),
    ("webhooks/op", lambda f: f.get("webhooks_per_op")),
    *(
        (f"{role} CPU ms/op", lambda f, role=role: _role_cpu(f, role))
        for role in ("server worker", "relay", "fraud", "processor", "notifier", "postgres")
    ),
    ("commits/s", lambda f: f.get("commits_per_s")),
    ("writers/commit", lambda f: f.get("writers_per_commit")),
    ("commits/WAL fsync", lambda f: f.get("commits_per_wal_sync")),
    ("Redis commands/op", lambda f: f.get("redis_per_op")),
)


def _median(runs: list[dict[str, Any]], scenario: str, pick: Any) -> float | None:
    values = [pick(run[scenario]) for run in runs]
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    a = _options(argv)
    worktree = Path(tempfile.mkdtemp(prefix="paygate-before-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), a.before],
        check=True,
        capture_output=True,
    )
    sides = {
        "before": (worktree / "src", _env(a.before_env)),
        "after": (ROOT / "src", _env(a.after_env)),
    }
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for r in range(a.rounds):
            for side, (src, env) in sides.items():
                print(f"round {r + 1}: {side}", file=sys.stderr, flush=True)
                runs[side].append(_one(side, src, env, a))
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False
        )
    print(f"before: {a.before} {a.before_env}  after: working tree {a.after_env}")
    print(f"{a.mode}, {a.seconds:g} s per scenario, {a.clients} clients, median of {a.rounds}")
    for side, done in runs.items():  # bench/machine.py: a round the host slowed shows here
        probes = ", ".join(f"{r['machine']['wall_per_cpu']:.2f}" for r in done)
        print(f"{side}: machine wall/CPU by round {probes}")
    print("| scenario | figure | before | after | after/before |")
    print("|---|---|---|---|---|")
    for scenario in a.scenarios.split(","):
        for label, pick in FIGURES:
            b = _median(runs["before"], scenario, pick)
            f = _median(runs["after"], scenario, pick)
            if b is None and f is None:
                continue
            ratio = f"\u00d7{f / b:.2f}" if b and f is not None else ""
            print(f"| {scenario} | {label} | {b if b is not None else ''} | {f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
