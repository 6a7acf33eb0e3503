"""`make bench-growth`: how the gateway's cost grows with merchants and with stored payments.

    python bench/growth.py [--database sqlite|postgresql|both] [--seconds S] [--clients C]
                           [--processes P] [--smoke] [--out FILE]

One `paygate serve` (SQLite, or PostgreSQL from pgserver through PAYGATE_DATABASE_URL) runs the
whole time, its read cache off so that reads measure the database. Stages, in an order in which
the data only grows: 1, 100 and 10,000 active merchants with few stored payments (the stage's
own creates), then 10^4 and 10^6 payments stored over 100 merchants and one big merchant
holding half of them. Each stage seeds what it needs (bench/seed.py, the gateway still serving:
nothing else runs meanwhile) and measures, each for `--seconds`: `create` (POST /v1/payments,
no wait), `read` (GET of random stored payments, seeded ones included), `list_first` (the first
page of ten) and `list_deep` / `list_deep_big` (the page after a random stored payment of any
active merchant / of the big one). Figures go to stdout as a table, and with every detail and
their ratios to the first stage (and to the first stage of their axis) to
bench/results/<date>-growth-<database>.json. Exit 1 only when a seeding step or a scenario did
not work at all; speed is never judged. docs/performance.md, "How cost grows", explains it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import growth_report
import httpx
import loadgen
import seed
import servers
from measure import drain, measure
from scenarios import payment_body

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = {  # the figure's name: the load generator's scenario
    "create": "spread_accept",
    "read": "spread_reads",
    "list_first": "list_first",
    "list_deep": "list_deep",
    "list_deep_big": "list_deep",
}
BIG_SHARE = 0.5  # of the seeded payments, the big merchant's
PAIRS_PER_JOB = 20_000  # stored payments a read or list scenario picks from
T0 = time.monotonic()


@dataclass(frozen=True)
class Stage:
    name: str
    axis: str  # "merchants" or "stored"
    merchants: int  # active: the load is spread over them (stored stages: the big one + spread)
    stored: int  # payments in the table before the scenarios (0: only what the stage creates)


def plan(smoke: bool) -> list[Stage]:
    m, spread, stored = (
        ((1, 3, 30), 3, (1_000, 3_000)) if smoke else ((1, 100, 10_000), 100, (10**4, 10**6))
    )
    return [Stage(f"merchants_{n}", "merchants", n, 0) for n in m] + [
        Stage(f"stored_{n}", "stored", spread + 1, n) for n in stored
    ]


def say(text: str) -> None:
    """Progress, on stderr: the table on stdout stays clean."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", file=sys.stderr, flush=True)


@dataclass
class World:
    """What the run has made so far: merchants (index 0 is the big one), stored payments known
    by id with their merchant, and the template row of the clones."""

    gw: servers.Gateway
    settings: Any
    pg: servers.Postgres | None
    merchants: list[seed.Merchant] = field(default_factory=list)
    stored: list[tuple[str, str]] = field(default_factory=list)  # (merchant id, payment id)
    template: dict[str, Any] | None = None

    def key_of(self) -> dict[str, str]:
        return {m.id: m.key for m in self.merchants}


def _options(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    ap.add_argument("--seconds", type=float, default=None, help="per scenario (default 5)")
    ap.add_argument("--clients", type=int, default=None, help="concurrent clients (default 16)")
    ap.add_argument("--processes", type=int, default=None, help="load generator processes (2)")
    ap.add_argument("--smoke", action="store_true", help="tiny stages, 1 s, 4 clients")
    ap.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    ap.add_argument(
        "--axis", choices=("merchants", "stored", "both"), default="both", help="stages to run"
    )
    a = ap.parse_args(argv)
    a.seconds = a.seconds or (1.0 if a.smoke else 5.0)
    a.clients = a.clients or (4 if a.smoke else 16)
    a.processes = a.processes or (1 if a.smoke else 2)
    a.clients = max(a.clients, a.processes)
    return a


def _template_payment(w: World) -> dict[str, Any]:
    """One real payment of the big merchant, through the API to its outcome, read back."""
    headers = {
        "Authorization": f"Bearer {w.merchants[0].key}",
        "Idempotency-Key": uuid.uuid4().hex,
        "Prefer": "wait=10",
    }
    body = {**payment_body(), "description": "growth template"}
    r = httpx.post(f"{w.gw.url}/v1/payments", json=body, headers=headers, timeout=30)
    r.raise_for_status()
    return asyncio.run(seed.template(w.settings, r.json()["id"]))


def _seed(w: World, stage: Stage, rng: random.Random) -> dict[str, Any]:
    """Merchants up to the stage's count, payments up to its stored count; timed."""
    out: dict[str, Any] = {}
    more = stage.merchants - len(w.merchants)
    if more > 0:
        say(f"{stage.name}: seeding {more} merchants")
        t0 = time.perf_counter()
        w.merchants += asyncio.run(seed.merchants(w.settings, more, start=len(w.merchants)))
        took = time.perf_counter() - t0
        out["merchants"] = {
            "rows": more,
            "seconds": round(took, 2),
            "rows_per_s": round(more / took),
        }
    if stage.stored > w.gw.footprint_sizes()["payments"]:
        w.template = w.template or _template_payment(w)
        have = w.gw.footprint_sizes()["payments"]
        big, others = w.merchants[0].id, [m.id for m in w.merchants[1 : stage.merchants]]

        def owner(r: random.Random) -> str:
            return big if r.random() < BIG_SHARE else r.choice(others)

        count = stage.stored - have
        say(f"{stage.name}: seeding {count:,} payments (clones)")
        done = asyncio.run(
            seed.clone_payments(w.settings, w.template, count, owner, seed=rng.randrange(2**32))
        )
        w.stored += done.sample
        out["payments"] = done.figures()
        if w.pg is not None:
            # What autovacuum does within a minute of a bulk load, done now so the planner's
            # statistics do not depend on when the stage starts.
            t0 = time.perf_counter()
            servers.pg_query(w.pg.dsn, "ANALYZE payments")
            out["analyze_s"] = round(time.perf_counter() - t0, 2)
    return out


def _owners(w: World, ids: list[str]) -> list[tuple[str, str]]:
    """(merchant id, payment id) of payments the API acknowledged, read from the database."""
    found: list[tuple[str, str]] = []
    ids = [i for i in ids if re.fullmatch(r"pay_[0-9A-Z]{26}", i)]
    for n in range(0, len(ids), 500):
        quoted = ",".join(f"'{i}'" for i in ids[n : n + 500])
        rows = w.gw.query(f"SELECT merchant_id, id FROM payments WHERE id IN ({quoted})")
        found += [(str(m), str(p)) for m, p in rows]
    return found


def _touches(w: World, since: int) -> int:
    """API keys whose `last_used_at` the gateway wrote since `since` (Unix seconds): it writes it
    in the background at most once a minute per key, so with many merchants each sending
    rarely, nearly every request brings one such write."""
    sql = f"SELECT COUNT(*) FROM api_keys WHERE last_used_at >= {since}"
    return int(w.gw.query(sql)[0][0])


def _write_transactions(w: World) -> int | None:
    """PostgreSQL's transaction id counter: only transactions that write take one (and this
    query, one each time). None on SQLite."""
    if w.pg is None:
        return None
    return int(w.gw.query("SELECT txid_current()")[0][0])


def _picks(label: str, merchant_id: str, active: set[str], big: str) -> bool:
    """Whose stored payments a scenario reads: anyone's (`read`: the payment is found by id),
    the active merchants' (`list_deep`), the big merchant's (`list_deep_big`)."""
    if label == "list_deep_big":
        return merchant_id == big
    return label == "read" or merchant_id in active


def _job(scenario: str, w: World, a: argparse.Namespace, **kw: Any) -> loadgen.Job:
    return loadgen.Job(scenario, w.gw.url, "", a.seconds, a.clients // a.processes, **kw)


def run_stage(w: World, stage: Stage, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    seeding = _seed(w, stage, rng)
    before = w.gw.footprint_sizes()
    active = w.merchants[: stage.merchants]
    active_ids, keys = {m.id for m in active}, [m.key for m in active]
    key_of, big = w.key_of(), w.merchants[0].id
    figures: dict[str, Any] = {}
    for label, scenario in SCENARIOS.items():
        if label in ("create", "list_first"):
            job = _job(scenario, w, a, keys=keys)
        else:
            pool = [(key_of[m], p) for m, p in w.stored if _picks(label, m, active_ids, big)]
            job = _job(scenario, w, a, pairs=rng.sample(pool, min(PAIRS_PER_JOB, len(pool))))
        if not (job.keys or job.pairs):
            say(f"{stage.name} {label}: nothing stored to read, skipped")
            continue
        say(f"{stage.name} {label}: {a.seconds:g} s")
        since, writes = int(time.time()), _write_transactions(w)
        fig, out = measure(job, a.processes, w.gw.sample)
        fig["api_key_touches"] = _touches(w, since)
        if writes is not None:
            fig["write_transactions"] = (_write_transactions(w) or 0) - writes - 1
        if label == "create":
            # The pipeline finishes what was accepted before anything else is measured.
            fig["drain"] = drain(w.gw.backlog, timeout=max(60.0, 12 * a.seconds))
            w.stored += _owners(w, out.tally.acked)
        fig["scenario"] = label
        figures[label] = fig
    after = w.gw.footprint_sizes()
    return {
        "stage": stage.name,
        "axis": stage.axis,
        "merchants_active": stage.merchants,
        "merchants_total": len(w.merchants),
        "payments_stored": before["payments"],
        "payments_after": after["payments"],
        "database_bytes": before["database_bytes"],
        "database_bytes_after": after["database_bytes"],
        "seeding": seeding,
        "scenarios": figures,
    }


def run_database(database: str, folder: Path, a: argparse.Namespace) -> dict[str, Any]:
    pg = servers.Postgres(folder / "postgres") if database == "postgresql" else None
    gw: servers.Gateway | None = None
    try:
        gw = servers.Gateway("embedded", folder, pg, extra_env={"PAYGATE_READ_CACHE": "off"})
        say(f"{database}: paygate serve, waiting until it serves")
        t0 = time.monotonic()
        gw.start()
        startup = time.monotonic() - t0
        w = World(gw, seed.settings_for(gw.server.env), pg)
        rng = random.Random(7)
        wanted = [st for st in plan(a.smoke) if a.axis in ("both", st.axis)]
        stages = [run_stage(w, stage, a, rng) for stage in wanted]
        return {"database": database, "startup_s": round(startup, 2), "stages": stages}
    finally:
        if gw is not None:
            gw.server.stop()
        if pg is not None:
            pg.stop()
        say(f"{database}: stopped")


def _code() -> dict[str, Any]:
    """The commit measured, and any file of src/ changed beside it: figures describe the code
    the gateway ran, which the commit alone may not be."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True, text=True)
        return proc.stdout

    changed = git("status", "--porcelain", "--", "../src").splitlines()
    head = git("rev-parse", "HEAD").strip()
    return {"commit": head, "src_uncommitted": [line[3:] for line in changed]}


def main(argv: list[str] | None = None) -> int:
    a = _options(argv)
    started = dt.datetime.now(dt.UTC)
    databases = ["sqlite", "postgresql"] if a.database == "both" else [a.database]
    root = Path(tempfile.mkdtemp(prefix="paygate-growth-"))
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "options": {
            "database": a.database,
            "seconds": a.seconds,
            "clients": a.clients,
            "processes": a.processes,
            "smoke": a.smoke,
            "stages": [s.__dict__ for s in plan(a.smoke)],
            "big_merchant_share": BIG_SHARE,
            "read_cache": "off",
        },
        "machine": {
            "cpus": loadgen.cores(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "code": _code(),
        "databases": {},
    }
    try:
        for database in databases:
            (root / database).mkdir()
            results["databases"][database] = run_database(database, root / database, a)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    growth_report.add_ratios(results)
    growth_report.print_report(results)
    name = f"{started:%Y-%m-%d}-growth-{a.database}{'-smoke' if a.smoke else ''}.json"
    out = a.out or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"results: {out}")
    failures = growth_report.failures(results)
    for line in failures:
        print(f"FAIL: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
