"""The run's tables (Rich), its ratios to the limits and to the peer, and its failures."""

from __future__ import annotations

import shutil
from typing import Any

import machine
from rich.console import Console
from rich.table import Table

LIMIT_ROWS = ("bare_json", "durable_insert_sqlite", "durable_insert_postgresql")
ORDER = ("accept", "end_to_end", "status_reads", "mixed_day")


def _ordered(scenarios: dict[str, Any]) -> list[str]:
    return sorted(scenarios, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _p99(fig: dict[str, Any]) -> float | None:
    lat = fig.get("create_ms") or fig.get("outcome_ms")
    return lat["p99"] if lat else None


def _db_writes(fig: dict[str, Any]) -> float | None:
    db = fig.get("db") or {}
    value = db.get("commits_per_s")
    return value if value is not None else db.get("outbox_rows_per_s")


def add_ratios(results: dict[str, Any]) -> None:
    """Each gateway figure over the matching limit; ours over the peer's; and each figure's
    `host_speed`, its probe over the run's fastest (bench/machine.py), which `paygate
    estimate` reads to plan only from a calm host."""
    peer = results.get("peer")
    results["vs_peer"] = {}
    fastest = machine.fastest(probes(results))
    for fig in _figures(results):
        fig["host_speed"] = round(machine.share(fig["machine"], fastest), 3)
    for mode, res in results["modes"].items():
        lim = res["limits"]
        bare = lim["bare_json"]
        insert = lim[f"durable_insert_{res['database']}"]
        batched = lim[f"batched_insert_{res['database']}"]
        for fig in res["scenarios"].values():
            db = fig.get("db") or {}
            fig["ratios"] = {
                "ops_vs_bare_json": _ratio(fig["ops_per_s"], bare["ops_per_s"]),
                "ops_vs_durable_insert": _ratio(fig["ops_per_s"], insert["ops_per_s"]),
                "p99_vs_durable_insert": _ratio(_p99(fig), _p99(insert)),
                "db_writes_vs_durable_insert": _ratio(_db_writes(fig), insert["ops_per_s"]),
                "outbox_rows_vs_batched_insert": _ratio(
                    db.get("outbox_rows_per_s"), batched["rows_per_s"]
                ),
            }
        if peer:
            ours, theirs = res["scenarios"], peer
            results["vs_peer"][mode] = {
                "accept_rate": _ratio(ours["accept"]["ops_per_s"], theirs["accept"]["ops_per_s"]),
                "accept_p99": _ratio(_p99(ours["accept"]), _p99(theirs["accept"])),
                "end_to_end_rate": _ratio(
                    ours["end_to_end"]["completed_per_s"], theirs["end_to_end"]["completed_per_s"]
                ),
                "end_to_end_p99": _ratio(_p99(ours["end_to_end"]), _p99(theirs["end_to_end"])),
            }


def _n(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}{unit}" if abs(x) >= 100 else f"{x:,.1f}{unit}"


def _x(x: float | None) -> str:
    return "—" if x is None else f"×{x:.2f}"  # noqa: RUF001


def _lat(lat: dict[str, float] | None) -> str:
    return "—" if not lat else f"{lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f}"


def _row(table: Table, label: str, fig: dict[str, Any], fastest: float) -> None:
    r = fig.get("ratios") or {}
    srv, gen = fig["server"], fig["generator"]
    table.add_row(
        label,
        _n(fig["ops_per_s"]),
        _x(r.get("ops_vs_bare_json")),
        _x(r.get("ops_vs_durable_insert")),
        _n(fig["accepted_per_s"]),
        _n(fig["completed_per_s"] or fig.get("pipeline_completed_per_s")),
        _lat(fig["create_ms"]),
        _lat(fig["outcome_ms"]),
        _x(r.get("p99_vs_durable_insert")),
        f"{srv['cpu_s']:.1f} ({srv['cpu_pct_of_machine']:.0f}%)",
        _n(srv.get("cpu_ms_per_op")),
        _n(srv["peak_rss_mb"]),
        _n(_db_writes(fig)),
        f"{gen['busiest_process_cpu_pct']:.0f}%",
        f"{fig['loadavg_1m'][1]:.1f}",
        _host(fig, fastest),
    )


def _host(fig: dict[str, Any], fastest: float) -> str:
    """The host's speed just before the figure's load, over the run's fastest."""
    probe = fig.get("machine")
    return f"{machine.share(probe, fastest):.0%}" if probe else "—"


def _table(title: str) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for name in (
        "scenario",
        "ok/s",
        "÷bare",
        "÷insert",
        "accepted/s",
        "completed/s",
        "create ms p50/95/99",
        "outcome ms p50/95/99",
        "p99 ÷insert",
        "server CPU s",
        "CPU ms/op",
        "peak RSS MB",
        "db writes/s",
        "gen CPU",
        "load 1m",
        "host",
    ):
        t.add_column(name, justify="left" if name == "scenario" else "right", no_wrap=True)
    return t


def print_report(results: dict[str, Any]) -> None:
    width = max(250, shutil.get_terminal_size((250, 40)).columns)
    console = Console(width=width, highlight=False)
    o, m = results["options"], results["machine"]
    console.print(
        f"[bold]make bench[/] {results['started']}  {o['seconds']:g} s per scenario, "
        f"{o['clients']} clients in {o['processes']} generator process(es), {m['cpus']} CPUs, "
        f"load average at start {m['loadavg_start'][0]:.2f} / end {m['loadavg_end'][0]:.2f}"
    )
    fastest = machine.fastest(probes(results))
    _machine_speed(console, m, fastest)
    for mode, res in results["modes"].items():
        t = _table(f"{mode} ({res['database']}, {res['limits']['server_processes']} API process)")
        for name in LIMIT_ROWS:
            if name in res["limits"]:
                _row(t, f"limit: {name}", res["limits"][name], fastest)
        for name in _ordered(res["scenarios"]):
            _row(t, name, res["scenarios"][name], fastest)
        if results.get("peer"):
            for name in ("accept", "end_to_end"):
                _row(t, f"peer: localstripe {name}", results["peer"][name], fastest)
        console.print(t)
        _busy_generator(console, res)
        _short_host(console, res, fastest)
        for db in ("sqlite", "postgresql"):
            raw = res["limits"].get(f"batched_insert_{db}")
            if raw:
                console.print(
                    f"limit: batched insert on {db} (executemany of 100 rows per commit): "
                    f"{raw['rows_per_s']:,.0f} rows/s, {raw['commits_per_s']:,.0f} commits/s"
                )
        if res["database"] == "sqlite":
            console.print(
                "db writes/s on SQLite = outbox rows written per second (a proxy: SQLite keeps "
                "no commit count); on PostgreSQL = write transactions per second (transaction ids)"
            )
        _processes(console, res)
        if res.get("sustained"):
            _sustained(console, res["sustained"], fastest)
        d = res["durability"]
        api_ok = d["api_sample_checked"] - len(d["api_sample_missing"])
        console.print(
            f"[bold]durability: {d['present']}/{d['acknowledged']} acknowledged payments present"
            f"[/] (SIGKILL after {d['killed_after_s']:.1f} s of load, restart "
            f"{d['restart_s']:.1f} s, API sample {api_ok}/{d['api_sample_checked']})"
        )
        vs = results["vs_peer"].get(mode)
        if vs:
            console.print(
                f"ours ÷ localstripe: accept rate {_x(vs['accept_rate'])}, accept p99 "
                f"{_x(vs['accept_p99'])}; end-to-end rate {_x(vs['end_to_end_rate'])}, "
                f"end-to-end p99 {_x(vs['end_to_end_p99'])}"
            )


def _probed(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A mode's measured figures that have a probe of the host before them, by name."""
    figures = {f"limit: {k}": v for k, v in res["limits"].items()} | res["scenarios"]
    for step in (res.get("sustained") or {}).get("steps", []):
        figures[f"sustained {step['offered_per_s']:g}/s"] = step
    return {n: f for n, f in figures.items() if isinstance(f, dict) and f.get("machine")}


def _figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured figure of a run that has a probe of the host before it."""
    figures = [f for res in results["modes"].values() for f in _probed(res).values()]
    peer = (results.get("peer") or {}).values()
    return figures + [f for f in peer if isinstance(f, dict) and f.get("machine")]


def probes(results: dict[str, Any]) -> list[dict[str, float]]:
    """Every probe of the host's speed in a run (bench/machine.py)."""
    m = results["machine"]
    found = [m[k] for k in ("speed_start", "speed_end") if m.get(k)]
    return found + [f["machine"] for f in _figures(results)]


def _machine_speed(console: Console, m: dict[str, Any], fastest: float) -> None:
    """The probes at the run's start and end: for comparing runs, and within the run."""
    ends = [(name, m.get(f"speed_{name}")) for name in ("start", "end")]
    ends = [(name, fig) for name, fig in ends if fig]
    if ends:
        console.print(
            "machine speed (a fixed unit of work): "
            + "; ".join(
                f"{name} {fig['cpu_ms_per_unit']:.2f} ms CPU, wall/CPU {fig['wall_per_cpu']:.2f}"
                for name, fig in ends
            )
            + f"; fastest in the run {fastest:.2f} ms CPU"
        )


# The goal: the global Black-Friday peak of the largest processors, payments a second.
GOAL_PER_S = 2300


def _sustained(console: Console, found: dict[str, Any], fastest: float) -> None:
    """The open loop's steps (bench/sustained.py) and the most it held."""
    c = found["criteria"]
    t = Table(
        title=(
            f"sustained: payments offered on a clock, {c['seconds_per_step']:g} s a step; a step "
            f"holds with none refused, create p99 ≤ {c['create_p99_ms']:g} ms from each "
            f"payment's due time, and at most {c['in_flight_at_end_s']:g} s of arrivals in "
            "flight at its end"
        ),
        title_justify="left",
    )
    for name in ("offered/s", "accepted/s", "create ms p50/95/99", "in flight at end"):
        t.add_column(name, justify="right")
    for name in ("CPU ms/payment", "gen CPU", "host", "held"):
        t.add_column(name, justify="right")
    for step in found["steps"]:
        t.add_row(
            _n(step["offered_per_s"]),
            _n(step["accepted_per_s"]),
            _lat(step["create_ms"]),
            str(step["in_flight_at_end"]),
            _n(step["server"].get("cpu_ms_per_op")),
            f"{step['generator']['busiest_process_cpu_pct']:.0f}%",
            _host(step, fastest),
            "yes" if step["held"] else "no: " + "; ".join(step["why_not"]),
        )
    console.print(t)
    held = found["held_per_s"]
    console.print(
        f"[bold]sustained: {_n(held)} payments/s held[/]"
        + (f" ({held / GOAL_PER_S:.1%} of the goal's {GOAL_PER_S:,}/s)" if held else "")
    )


# A generator process busier than this may have set the pace itself: its row measures the
# generator as much as the server.
BUSY_GENERATOR_PCT = 85.0


def _busy_generator(console: Console, res: dict[str, Any]) -> None:
    figures = {f"limit: {k}": v for k, v in res["limits"].items()} | res["scenarios"]
    busy = [
        f"{name} ({fig['generator']['busiest_process_cpu_pct']:.0f}%)"
        for name, fig in figures.items()
        if isinstance(fig, dict)
        and fig.get("generator", {}).get("busiest_process_cpu_pct", 0) >= BUSY_GENERATOR_PCT
    ]
    if busy:
        console.print(
            f"[bold yellow]the load generator was busy[/] in {', '.join(busy)}: those rates may "
            "be the generator's, not the server's (more --processes, or fewer clients)"
        )


def _short_host(console: Console, res: dict[str, Any], fastest: float) -> None:
    """The figures before which the host ran the probe slower than `SPEED_AT_LEAST` of the
    run's fastest."""
    slow = [
        f"{name} ({machine.share(fig['machine'], fastest):.0%})"
        for name, fig in _probed(res).items()
        if machine.share(fig["machine"], fastest) < machine.SPEED_AT_LEAST
    ]
    if slow:
        console.print(
            f"[bold yellow]the host ran under {machine.SPEED_AT_LEAST:.0%} of its fastest[/] "
            f"before {', '.join(slow)}: those figures are the host's as much as the gateway's"
        )


def _processes(console: Console, res: dict[str, Any]) -> None:
    """CPU seconds of the gateway's processes per scenario, by kind, and their peak RSS."""
    names = _ordered(res["scenarios"])
    t = Table(title="gateway processes: CPU s per scenario", title_justify="left")
    t.add_column("process")
    for name in names:
        t.add_column(name, justify="right")
    t.add_column("peak RSS MB (largest)", justify="right")
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        for p in res["scenarios"][name]["server"]["processes"]:
            row = rows.setdefault(p["name"], {"rss": 0.0, "pids": set()})
            row[name] = row.get(name, 0.0) + p["cpu_s"]
            row["rss"] = max(row["rss"], p["peak_rss_mb"])
            row["pids"].add(p["pid"])
    for label, row in rows.items():
        count = len(row["pids"])
        shown = f"{label} (×{count})" if count > 1 else label  # noqa: RUF001
        t.add_row(shown, *(_n(row.get(n)) for n in names), _n(row["rss"]))
    console.print(t)


def failures(results: dict[str, Any]) -> list[str]:
    """What makes the run fail: lost payments, or a scenario or sustained step where nothing
    worked."""
    out = []
    for mode, res in results["modes"].items():
        d = res["durability"]
        if not d["ok"]:
            out.append(
                f"{mode}: {d['acknowledged'] - d['present']} acknowledged payment(s) missing "
                f"after the restart; API sample missing {d['api_sample_missing']}"
            )
        for name, fig in res["scenarios"].items():
            if not fig["ops"]:
                out.append(f"{mode}: scenario {name} completed no operation ({fig['errors']})")
        for step in (res.get("sustained") or {}).get("steps", []):
            if not step["ops"]:
                out.append(f"{mode}: sustained step {step['offered_per_s']}/s accepted nothing")
    peer = results.get("peer") or {}
    for name in ("accept", "end_to_end"):
        if name in peer and not peer[name]["ops"]:
            out.append(f"peer: {name} completed no operation ({peer[name]['errors']})")
    return out
