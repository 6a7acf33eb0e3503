"""`make bench`: the gateway under load, beside its limits and a peer, in one run.

    python bench/run.py [--mode embedded|scaleout|both] [--seconds S] [--clients C]
                        [--processes P] [--smoke] [--no-peer] [--out FILE]

For each mode: the limits (a bare FastAPI endpoint on uvicorn, the same endpoint doing one
durable INSERT, raw batched inserts), then the gateway started fresh (`paygate serve`, or
`paygate cluster` on PostgreSQL, NATS and Redis) under the scenarios `accept`, `end_to_end`,
`status_reads` and `mixed_day`, then the sustained rate (bench/sustained.py: payments offered on
a clock, the most the gateway keeps up with while its create call's p99 stays under 50 ms),
then the durability check (SIGKILL under load, restart, every
acknowledged payment still there). Then the peer, localstripe, under `accept` and `end_to_end`.
A table is printed and everything is written to bench/results/<date>-<mode>.json. The run
fails (exit 1) when an acknowledged payment is missing or a scenario or step did nothing; it
never judges speed. docs/performance.md explains each figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import limits
import loadgen
import machine
import procstat
import report
import servers
import sustained
from measure import drain, measure

RESULTS = Path(__file__).resolve().parent / "results"
GATEWAY_SCENARIOS = ("accept", "end_to_end", "status_reads", "mixed_day")
T0 = time.monotonic()


def say(text: str) -> None:
    """Progress, on stderr: the table on stdout stays clean."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def _options(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("embedded", "scaleout", "both"), default="embedded")
    ap.add_argument("--seconds", type=float, default=None, help="per scenario (default 15)")
    ap.add_argument("--clients", type=int, default=None, help="concurrent clients (default 32)")
    ap.add_argument("--processes", type=int, default=None, help="load generator processes (2)")
    ap.add_argument("--smoke", action="store_true", help="1.5 s per scenario, 4 clients, 1 process")
    ap.add_argument("--no-peer", dest="peer", action="store_false", help="skip localstripe")
    ap.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    ap.add_argument("--keep", action="store_true", help="keep the run's data folder")
    a = ap.parse_args(argv)
    small = a.smoke
    a.seconds = a.seconds or (1.5 if small else 15.0)
    a.clients = a.clients or (4 if small else 32)
    a.processes = a.processes or (1 if small else 2)
    a.clients = max(a.clients, a.processes)
    return a


def _job(
    scenario: str, url: str, key: str, a: argparse.Namespace, ids: list[str] | None = None
) -> loadgen.Job:
    """`clients` in total, shared out among the generator processes."""
    return loadgen.Job(scenario, url, key, a.seconds, a.clients // a.processes, ids or [])


def run_limits(folder: Path, a: argparse.Namespace, processes: int, pg: Any) -> dict[str, Any]:
    """The same server stack doing nothing, one durable INSERT per request, raw inserts."""
    out: dict[str, Any] = {"server_processes": processes}
    targets = [("sqlite", f"sqlite:///{folder / 'limits.db'}")]
    if pg is not None:
        targets.append(("postgresql", pg.sqlalchemy_url))
    for name, url in targets:
        say(f"limits: FastAPI on uvicorn ({processes} process), {name}")
        server, base = servers.limits_server(folder, url, processes)
        try:

            def sample(server: servers.Server = server) -> list[Any]:
                return procstat.tree(server.pid)

            if name == "sqlite":
                job = _job("bare_json", base, "", a)
                out["bare_json"], _ = measure(job, a.processes, sample)
            out[f"durable_insert_{name}"], _ = measure(
                _job("durable_insert", base, "", a), a.processes, sample
            )
        finally:
            server.stop()
    raw_seconds = min(a.seconds, 5.0)
    say("limits: batched inserts")
    out["batched_insert_sqlite"] = limits.sqlite_batched(folder / "raw.db", raw_seconds)
    if pg is not None:
        out["batched_insert_postgresql"] = limits.postgres_batched(pg.dsn, raw_seconds)
    return out


def durability(gw: servers.Gateway, acked: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the gateway under load, restart it on the same data, look for every payment the
    API acknowledged."""
    burst = max(2.0, min(a.seconds, 6.0))
    kill_at = round(burst * 0.6, 2)
    say(f"durability: accept load, SIGKILL of the gateway after {kill_at:.1f} s, restart")
    killer = threading.Timer(kill_at, gw.server.kill_hard)
    killer.start()
    try:
        job = loadgen.Job("accept", gw.url, gw.merchant_key, burst, a.clients // a.processes)
        out = loadgen.run(job, a.processes)
    finally:
        killer.join()
    acked = acked + out.tally.acked
    t0 = time.monotonic()
    gw.start()
    restart_s = time.monotonic() - t0
    present = gw.payment_ids()
    missing = sorted(set(acked) - present)
    # Through the API as well, for a sample: the restarted gateway serves what it kept.
    sample = random.Random(0).sample(acked, min(50, len(acked)))
    headers = {"Authorization": f"Bearer {gw.merchant_key}"}
    api_missing = [
        pid
        for pid in sample
        if httpx.get(f"{gw.url}/v1/payments/{pid}", headers=headers, timeout=30).status_code != 200
    ]
    recovered = drain(gw.backlog, timeout=60.0)
    say(f"durability: {len(set(acked)) - len(missing)}/{len(set(acked))} present")
    return {
        "acknowledged": len(set(acked)),
        "present": len(set(acked)) - len(missing),
        "missing": missing[:100],
        "acknowledged_during_kill_burst": len(out.tally.acked),
        "killed_after_s": kill_at,
        "restart_s": round(restart_s, 2),
        "api_sample_checked": len(sample),
        "api_sample_missing": api_missing,
        "pipeline_after_restart": recovered,
        "ok": not missing and not api_missing,
    }


def run_gateway(mode: str, folder: Path, a: argparse.Namespace) -> dict[str, Any]:
    if mode == "scaleout":
        say("scale-out: PostgreSQL (pgserver)")
    pg = servers.Postgres(folder / "postgres") if mode == "scaleout" else None
    redis = servers.Redis(folder / "redis") if mode == "scaleout" else None
    gw: servers.Gateway | None = None
    sink, webhooks = servers.sink(folder)
    try:
        gw = servers.Gateway(mode, folder, pg, redis, webhooks=webhooks)
        t0 = time.monotonic()
        if a.smoke:
            # A smoke run's figures mean nothing: the gateway boots while the limits run.
            gw.launch()
        result: dict[str, Any] = {
            "limits": run_limits(folder, a, gw.processes, pg),
            "database": "postgresql" if pg else "sqlite",
        }
        if not a.smoke:
            t0 = time.monotonic()
            gw.launch()
        say(f"gateway: {mode}, waiting until it serves")
        gw.ready()
        key = gw.create_merchant()
        empty = gw.footprint_sizes()  # the migrated schema and the merchant: not per payment
        result["startup_s"] = round(time.monotonic() - t0, 2)
        scenarios: dict[str, Any] = {}
        acked: list[str] = []
        for name in GATEWAY_SCENARIOS:
            ids = random.Random(1).sample(acked, min(2000, len(acked)))
            job = _job(name, gw.url, key, a, ids)
            say(f"gateway: {mode} {name}, {a.seconds:g} s")
            succeeded0 = gw.db_counters()["succeeded"] or 0
            sent0 = servers.received(webhooks)
            figures, out = measure(job, a.processes, gw.sample, gw.db_counters)
            figures["drain"] = drain(gw.backlog, timeout=max(30.0, 12 * a.seconds))
            # Sent during the scenario and its drain; the last ones may still be on their way.
            figures["webhooks_received"] = servers.received(webhooks) - sent0
            if name == "accept":
                # What the pipeline finished of the accepted payments, the backlog included.
                done = (gw.db_counters()["succeeded"] or 0) - succeeded0
                busy = figures["seconds"] + figures["drain"]["drain_s"]
                figures["pipeline_completed_per_s"] = round(done / busy, 1)
            scenarios[name] = figures
            acked += out.tally.acked
        result["scenarios"] = scenarios
        say(f"gateway: {mode} sustained rate, payments offered on a clock")
        e2e = scenarios["end_to_end"]["completed_per_s"] or 0.0
        result["sustained"], made = sustained.run(gw, a, e2e)
        acked += made
        result["webhook_events"] = list(servers.OUTCOME_EVENTS)
        result["footprint"] = gw.footprint(since=empty)
        result["durability"] = durability(gw, acked, a)
        return result
    finally:
        if gw is not None:
            gw.server.stop()
        sink.stop()
        if pg is not None:
            pg.stop()
        if redis is not None:
            redis.stop()
        say(f"gateway: {mode} stopped")


def run_peer(folder: Path, a: argparse.Namespace) -> dict[str, Any]:
    server, url = servers.localstripe(folder)
    try:
        out: dict[str, Any] = {"name": "localstripe", "server_processes": 1}
        key = "sk_test_bench"
        for name in ("peer_accept", "peer_end_to_end"):
            say(f"peer: localstripe {name.removeprefix('peer_')}, {a.seconds:g} s")
            # localstripe rewrites its whole store after every write: each scenario starts it
            # empty, so that the one measured second is not slowed by what the first left.
            httpx.delete(f"{url}/_config/data", timeout=30).raise_for_status()
            figures, _ = measure(
                _job(name, url, key, a), a.processes, lambda: procstat.tree(server.pid)
            )
            out[name.removeprefix("peer_")] = figures
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    a = _options(argv)
    started = dt.datetime.now(dt.UTC)
    modes = ["embedded", "scaleout"] if a.mode == "both" else [a.mode]
    root = Path(tempfile.mkdtemp(prefix="paygate-bench-"))
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "options": {
            "mode": a.mode,
            "seconds": a.seconds,
            "clients": a.clients,
            "processes": a.processes,
            "smoke": a.smoke,
        },
        "machine": {
            "cpus": loadgen.cores(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "speed_start": machine.speed(),
        },
        "modes": {},
        "peer": None,
    }
    try:
        for mode in modes:
            (root / mode).mkdir()
            results["modes"][mode] = run_gateway(mode, root / mode, a)
        if a.peer:
            (root / "peer").mkdir()
            results["peer"] = run_peer(root / "peer", a)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["speed_end"] = machine.speed()
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report.add_ratios(results)
    report.print_report(results)
    out = a.out or RESULTS / f"{started:%Y-%m-%d}-{a.mode}{'-smoke' if a.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"results: {out}")
    failures = report.failures(results)
    for line in failures:
        print(f"FAIL: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
